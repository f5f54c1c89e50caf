//! The gRPC application of the data plane's gRPC rows: one unary method,
//! `/strait.bench.Echo/Say`, answering every request with 1 KiB (as nginx does for the HTTP
//! rows), served by tonic in its own process (`strait-bench --serve-grpc ADDR...`) so it can
//! be stopped by PID. [`request_frame`] is what h2load sends: one length-prefixed message.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use tonic::codegen::{BoxFuture, Service, http};

/// The method's path.
pub const PATH: &str = "/strait.bench.Echo/Say";

/// Unary echo: a `BytesValue` in, 1 KiB of `BytesValue` out.
#[derive(Clone)]
struct Echo {
    reply: Arc<Vec<u8>>,
}

impl tonic::server::UnaryService<Vec<u8>> for Echo {
    type Response = Vec<u8>;
    type Future = std::future::Ready<Result<tonic::Response<Vec<u8>>, tonic::Status>>;

    fn call(&mut self, _request: tonic::Request<Vec<u8>>) -> Self::Future {
        std::future::ready(Ok(tonic::Response::new(self.reply.as_ref().clone())))
    }
}

impl Service<http::Request<tonic::body::Body>> for Echo {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let echo = self.clone();
        Box::pin(async move {
            if request.uri().path() != PATH {
                return Ok(
                    tonic::Status::unimplemented(request.uri().path().to_string()).into_http(),
                );
            }
            let codec = tonic_prost::ProstCodec::<Vec<u8>, Vec<u8>>::default();
            Ok(tonic::server::Grpc::new(codec).unary(echo, request).await)
        })
    }
}

impl tonic::server::NamedService for Echo {
    const NAME: &'static str = "strait.bench.Echo";
}

/// Serves the echo on every address until the process is stopped.
pub fn serve(addresses: &[SocketAddr]) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let echo = Echo {
        reply: Arc::new(vec![b'x'; 1024]),
    };
    runtime.block_on(async {
        let mut servers = tokio::task::JoinSet::new();
        for addr in addresses {
            let router = tonic::transport::Server::builder().add_service(echo.clone());
            let addr = *addr;
            servers.spawn(async move { router.serve(addr).await.map_err(anyhow::Error::from) });
        }
        while let Some(done) = servers.join_next().await {
            done??;
        }
        Ok(())
    })
}

/// One request message framed as gRPC sends it: a 16-byte `BytesValue`.
pub fn request_frame() -> Vec<u8> {
    use prost::Message;
    let message = vec![b'q'; 16].encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(&message);
    frame
}

/// One real gRPC call through a chain (to `addr`, naming `authority`): the runner makes one
/// before loading a gRPC chain, since h2load counts any HTTP 200 as success and never reads
/// the `grpc-status` trailer. Fails unless the call returns OK with the 1 KiB reply.
pub async fn check_call(addr: SocketAddr, authority: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::time::Duration;
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .origin(format!("http://{authority}").parse()?)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(5));
    let channel = endpoint
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await?;
    let codec = tonic_prost::ProstCodec::<Vec<u8>, Vec<u8>>::default();
    let reply = grpc
        .unary(
            tonic::Request::new(vec![b'q'; 16]),
            http::uri::PathAndQuery::from_static(PATH),
            codec,
        )
        .await
        .with_context(|| format!("gRPC call {PATH} via {addr} ({authority})"))?;
    let len = reply.into_inner().len();
    anyhow::ensure!(len == 1024, "the gRPC reply held {len} bytes, not 1024");
    Ok(())
}
