//! Worker threads (Envoy's workers, Istio's `concurrency`): each runs its own single-threaded
//! runtime, accepts connections on every listener and serves each one it accepts from start to
//! end — the request's tasks, its upstream connections' tasks and their wake-ups stay on one
//! thread. The proxy's main thread keeps xDS, certificates, the admin API and the DNS proxy.
//! Workers may run under `SCHED_BATCH` ([`strait_sys::sched`]): woken by a socket, they then
//! wait for the thread on their CPU to block instead of preempting it.

use std::cell::Cell;
use std::sync::mpsc;
use std::thread::JoinHandle;

use strait_sys::sched;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// The index of the worker running the caller (0 off the workers): pooled connections opened
/// on a worker are preferred by requests on that worker.
pub fn current() -> usize {
    INDEX.with(Cell::get)
}

/// How many workers `concurrency` asks for: 0 means one per core.
pub fn count(concurrency: usize) -> usize {
    match concurrency {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// The running workers; dropping this stops them, and the connections they serve end: each
/// worker, its stop sender gone, drops its runtime on its own thread (cancelling its tasks
/// there). The threads are detached, not joined, as the drop may run on an async thread.
pub struct Workers {
    handles: Vec<Handle>,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts `count` workers (at least one), each under `policy` if one is given (else the
    /// policy the proxy was started with).
    pub fn start(count: usize, policy: Option<sched::Policy>) -> std::io::Result<Workers> {
        let mut workers = Workers {
            handles: Vec::new(),
            stops: Vec::new(),
            threads: Vec::new(),
        };
        for index in 0..count.max(1) {
            let (handle_tx, handle_rx) = mpsc::channel();
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("strait-worker-{index}"))
                .spawn(move || {
                    INDEX.with(|i| i.set(index));
                    if let Some(policy) = policy
                        && let Err(e) = sched::set_current_thread(policy)
                    {
                        let _ = handle_tx.send(Err(std::io::Error::new(
                            e.kind(),
                            format!("setting the scheduling policy {policy:?}: {e}"),
                        )));
                        return;
                    }
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(r) => r,
                        Err(e) => {
                            let _ = handle_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = handle_tx.send(Ok(runtime.handle().clone()));
                    // Runs the connections spawned onto this runtime until told to stop.
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                })?;
            let handle = handle_rx
                .recv()
                .map_err(|_| std::io::Error::other("a worker thread ended while starting"))??;
            workers.handles.push(handle);
            workers.stops.push(stop);
            workers.threads.push(thread);
        }
        Ok(workers)
    }

    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_worker_runs_spawned_tasks_on_its_own_thread_with_its_index() {
        let workers = Workers::start(3, None).unwrap();
        let mut seen = Vec::new();
        for handle in workers.handles() {
            let (tx, rx) = mpsc::channel();
            handle.spawn(async move {
                let _ = tx.send((current(), std::thread::current().name().map(String::from)));
            });
            seen.push(rx.recv().unwrap());
        }
        assert_eq!(
            seen,
            (0..3)
                .map(|i| (i, Some(format!("strait-worker-{i}"))))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn stopping_the_workers_cancels_their_tasks() {
        let workers = Workers::start(1, None).unwrap();
        let (tx, rx) = mpsc::channel::<()>();
        workers.handles()[0].spawn(async move {
            let _keep = tx;
            std::future::pending::<()>().await;
        });
        drop(workers);
        // The task's sender is dropped with the runtime: the channel disconnects.
        assert_eq!(
            rx.recv_timeout(std::time::Duration::from_secs(10)),
            Err(mpsc::RecvTimeoutError::Disconnected)
        );
    }

    /// The policy of each worker's thread, read on it.
    fn policies(workers: &Workers) -> Vec<sched::Policy> {
        workers
            .handles()
            .iter()
            .map(|handle| {
                let (tx, rx) = mpsc::channel();
                handle.spawn(async move {
                    let _ = tx.send(sched::current_thread().unwrap());
                });
                rx.recv().unwrap()
            })
            .collect()
    }

    #[test]
    fn workers_run_under_the_policy_asked_for_and_only_they_do() {
        let own = sched::current_thread().unwrap();
        let batch = Workers::start(2, Some(sched::Policy::Batch)).unwrap();
        assert_eq!(policies(&batch), [sched::Policy::Batch; 2]);
        // The starting thread keeps its own; workers started without a policy inherit it.
        assert_eq!(sched::current_thread().unwrap(), own);
        let inherited = Workers::start(2, None).unwrap();
        assert_eq!(policies(&inherited), [own; 2]);
    }

    #[test]
    fn zero_means_one_per_core() {
        assert!(count(0) >= 1);
        assert_eq!(count(3), 3);
    }
}
