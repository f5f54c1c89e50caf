//! Field paths in Kubernetes' notation: `spec.http[0].route[1].destination.host`,
//! `metadata.labels[app]`.

use std::fmt;

/// One step of a [`FieldPath`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Segment {
    /// A named field of an object: `.host`.
    Field(String),
    /// An element of a list: `[3]`.
    Index(usize),
    /// An entry of a map with user-chosen keys: `[app]`.
    Key(String),
}

/// Where a value sits inside a document, from its root.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FieldPath(Vec<Segment>);

impl FieldPath {
    pub const fn root() -> Self {
        Self(Vec::new())
    }

    /// Parses the dotted notation this type displays (`spec.ports[0].name`).
    /// Bracketed segments holding only digits are list indexes, others map keys.
    pub fn parse(text: &str) -> Self {
        let mut out = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('[') {
                let end = after.find(']').unwrap_or(after.len());
                let inner = &after[..end];
                out.push(match inner.parse::<usize>() {
                    Ok(i) => Segment::Index(i),
                    Err(_) => Segment::Key(inner.to_string()),
                });
                rest = after.get(end + 1..).unwrap_or("");
            } else {
                let trimmed = rest.strip_prefix('.').unwrap_or(rest);
                let end = trimmed.find(['.', '[']).unwrap_or(trimmed.len());
                if end > 0 {
                    out.push(Segment::Field(trimmed[..end].to_string()));
                }
                rest = &trimmed[end..];
                if end == 0 && !rest.starts_with('[') {
                    rest = rest.get(1..).unwrap_or("");
                }
            }
        }
        Self(out)
    }

    pub fn field(&self, name: &str) -> Self {
        self.with(Segment::Field(name.to_string()))
    }

    pub fn index(&self, i: usize) -> Self {
        self.with(Segment::Index(i))
    }

    pub fn key(&self, key: &str) -> Self {
        self.with(Segment::Key(key.to_string()))
    }

    fn with(&self, segment: Segment) -> Self {
        let mut v = Vec::with_capacity(self.0.len() + 1);
        v.extend_from_slice(&self.0);
        v.push(segment);
        Self(v)
    }

    pub fn segments(&self) -> &[Segment] {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// True when `self` is `other` or lies inside it.
    pub fn starts_with(&self, other: &FieldPath) -> bool {
        self.0.starts_with(&other.0)
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("<document>");
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Segment::Field(name) if i == 0 => f.write_str(name)?,
                Segment::Field(name) => write!(f, ".{name}")?,
                Segment::Index(n) => write!(f, "[{n}]")?,
                Segment::Key(k) => write!(f, "[{k}]")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_display_in_kubernetes_notation() {
        let p = FieldPath::root()
            .field("spec")
            .field("http")
            .index(0)
            .field("headers")
            .key("x-a");
        assert_eq!(p.to_string(), "spec.http[0].headers[x-a]");
    }

    #[test]
    fn parse_reads_back_what_display_writes() {
        let p = FieldPath::root()
            .field("spec")
            .field("ports")
            .index(2)
            .field("name");
        assert_eq!(FieldPath::parse(&p.to_string()), p);
        let m = FieldPath::root()
            .field("metadata")
            .field("labels")
            .key("app");
        assert_eq!(FieldPath::parse("metadata.labels[app]"), m);
    }
}
