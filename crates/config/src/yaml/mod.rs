//! Bounded YAML/JSON parsing into spanned trees.
//!
//! A file is cut into documents on `---` lines, as `kubectl` does, so that a syntax error in
//! one document never hides the others. Each document is parsed on its own by serde-saphyr
//! under a [`Limits`] budget (YAML bombs, deep nesting, alias storms) into a [`Node`] tree.

pub mod de;
mod node;
mod raw;

pub use node::{Entry, Node, Pos, Value};

use crate::issue::{Issue, IssueKind};
use crate::path::FieldPath;

/// Safety limits for untrusted input. The defaults are far above any real configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest file read, in bytes.
    pub max_file_bytes: usize,
    /// Most documents in one file.
    pub max_documents: usize,
    /// Deepest nesting of lists and mappings.
    pub max_depth: usize,
    /// Most parser events (scalars, starts and ends of collections) per document,
    /// counting those replayed by aliases.
    pub max_events: usize,
    /// Most alias uses per document.
    pub max_aliases: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_file_bytes: 32 * 1024 * 1024,
            max_documents: 10_000,
            max_depth: 64,
            max_events: 2_000_000,
            max_aliases: 10_000,
        }
    }
}

/// The text of one document of a multi-document file.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentText {
    /// 1-based position among the file's non-empty documents.
    pub index: usize,
    /// Number of file lines before the document's first line.
    pub line_offset: u32,
    pub text: String,
}

/// Cuts a file into documents at lines that start with `---` (and drops empty documents).
/// Text after `--- ` on the separator line stays with the next document, at its column.
pub fn split_documents(text: &str) -> Vec<DocumentText> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start_line: u32 = 0;
    let mut line_no: u32 = 0;
    let flush = |current: &mut String, start_line: u32, docs: &mut Vec<DocumentText>| {
        if !is_blank_document(current) {
            docs.push(DocumentText {
                index: docs.len() + 1,
                line_offset: start_line,
                text: std::mem::take(current),
            });
        } else {
            current.clear();
        }
    };
    for line in text.split_inclusive('\n') {
        let marker = ["---", "..."].iter().find(|m| {
            line.starts_with(*m)
                && line[3..]
                    .chars()
                    .next()
                    .is_none_or(|c| c.is_whitespace() || c == '#')
        });
        match marker {
            Some(m) => {
                flush(&mut current, start_line, &mut docs);
                start_line = line_no;
                // Keep the rest of the separator line (`--- {a: 1}`) at its column.
                if *m == "---"
                    && !line[3..].trim().is_empty()
                    && !line[3..].trim_start().starts_with('#')
                {
                    current.push_str("   ");
                    current.push_str(&line[3..]);
                } else {
                    current.push('\n');
                }
            }
            None => current.push_str(line),
        }
        line_no = line_no.saturating_add(1);
    }
    flush(&mut current, start_line, &mut docs);
    docs
}

fn is_blank_document(text: &str) -> bool {
    text.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#') || t.starts_with('%')
    })
}

/// Parses one document's text into a tree, or says precisely why it cannot.
pub fn parse_document(doc: &DocumentText, limits: &Limits) -> Result<Node, Issue> {
    raw::parse(&doc.text, limits)
        .map(|node| shift(node, doc.line_offset))
        .map_err(|e| {
            let (kind, message) = e;
            let message = match message.1 {
                Some(pos) if pos.line != 0 => {
                    let pos = pos.shifted(doc.line_offset);
                    format!("line {}, column {}: {}", pos.line, pos.column, message.0)
                }
                _ => message.0,
            };
            Issue::error(kind, FieldPath::root(), message)
        })
}

/// Where a syntax problem was found, when the parser knows it.
pub fn error_position(issue_message: &str) -> Option<Pos> {
    let rest = issue_message.strip_prefix("line ")?;
    let (line, rest) = rest.split_once(", column ")?;
    let (column, _) = rest.split_once(':')?;
    Some(Pos::new(line.parse().ok()?, column.parse().ok()?))
}

fn shift(mut node: Node, lines: u32) -> Node {
    fn walk(node: &mut Node, lines: u32) {
        node.pos = node.pos.shifted(lines);
        match &mut node.value {
            Value::Seq(items) => items.iter_mut().for_each(|n| walk(n, lines)),
            Value::Map(entries) => entries.iter_mut().for_each(|e| {
                e.key_pos = e.key_pos.shifted(lines);
                walk(&mut e.value, lines);
            }),
            _ => {}
        }
    }
    if lines > 0 {
        walk(&mut node, lines);
    }
    node
}

/// The error a caller gets for a parse failure: its class and a message with an optional place.
pub(crate) type ParseFailure = (IssueKind, (String, Option<Pos>));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_cut_on_separator_lines_and_empty_ones_dropped() {
        let docs = split_documents("---\na: 1\n---\n# only a comment\n---\nb: 2\n...\n");
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0].index, 1);
        assert_eq!(docs[1].index, 2);
        let b = parse_document(&docs[1], &Limits::default()).unwrap();
        assert_eq!(
            b.get("b").unwrap().pos.line,
            6,
            "line numbers are the file's"
        );
    }

    #[test]
    fn content_after_a_separator_keeps_its_column() {
        let docs = split_documents("a: 1\n--- {b: 2}\n");
        let b = parse_document(&docs[1], &Limits::default()).unwrap();
        let entry = b.entry("b").unwrap();
        assert_eq!((entry.key_pos.line, entry.key_pos.column), (2, 6));
    }

    #[test]
    fn a_syntax_error_names_its_line() {
        let docs = split_documents("a: 1\n---\nb: [1, 2\nc: 3\n");
        let err = parse_document(&docs[1], &Limits::default()).unwrap_err();
        assert_eq!(err.kind, IssueKind::Syntax);
        let pos = error_position(&err.message).expect("position in message");
        assert!(pos.line >= 3, "{err}");
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            bomb.push_str(&format!(
                "{n}: &{n} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n",
                n = char::from(b'a' + i),
                p = char::from(b'a' + i - 1)
            ));
        }
        let docs = split_documents(&bomb);
        let err = parse_document(&docs[0], &Limits::default()).unwrap_err();
        assert_eq!(err.kind, IssueKind::Limit, "{err}");
    }

    /// Runs on the test thread's 2 MB stack: nesting must be refused before it exhausts it.
    #[test]
    fn deep_nesting_of_every_shape_is_refused_as_a_limit() {
        let shapes = [
            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
            format!("a: {}", "{b: ".repeat(5_000)),
            format!("a: {}", "[{b: ".repeat(3_000)),
            format!("{}x", "- ".repeat(20_000)),
            (0..3000)
                .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
                .collect::<String>(),
        ];
        for text in shapes {
            let docs = split_documents(&text);
            let err = parse_document(&docs[0], &Limits::default()).unwrap_err();
            assert_eq!(err.kind, IssueKind::Limit, "{err}");
        }
    }

    #[test]
    fn integer_keys_become_text() {
        let docs = split_documents("80: {mode: STRICT}\n");
        let n = parse_document(&docs[0], &Limits::default()).unwrap();
        assert!(n.get("80").is_some());
    }

    #[test]
    fn ipv6_addresses_in_flow_lists_read_as_kubectl_reads_them() {
        let docs = split_documents("addresses: [1.2.3.4, 2001:db8::, {a: 1}]\nm: {k:}\n");
        let n = parse_document(&docs[0], &Limits::default()).unwrap();
        let Value::Seq(items) = &n.get("addresses").unwrap().value else {
            panic!()
        };
        assert_eq!(items[1].value, Value::Str("2001:db8::".into()));
        assert!(
            matches!(items[2].value, Value::Map(_)),
            "real mappings stay mappings"
        );
        assert!(matches!(n.get("m").unwrap().value, Value::Map(_)));
    }

    #[test]
    fn duplicate_keys_are_errors() {
        let docs = split_documents("a: 1\na: 2\n");
        let err = parse_document(&docs[0], &Limits::default()).unwrap_err();
        assert_eq!(err.kind, IssueKind::Syntax);
        assert!(err.message.contains("duplicate"), "{err}");
    }
}
