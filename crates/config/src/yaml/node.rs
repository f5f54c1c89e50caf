//! A parsed YAML/JSON document as a tree in which every node remembers where it was written.
//!
//! Typed configuration is deserialized from this tree (see [`super::de`]), and validation
//! problems found later are pointed back at a line and column by walking it with a
//! [`FieldPath`](crate::path::FieldPath).

use crate::path::{FieldPath, Segment};

/// A 1-based line and column in the source file; `0:0` means "unknown".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
}

impl Pos {
    pub const fn new(line: u32, column: u32) -> Self {
        Self { line, column }
    }

    /// Moves a position found in a document parsed on its own to where it is in the file.
    pub(crate) fn shifted(self, lines: u32) -> Self {
        if self.line == 0 {
            return self;
        }
        Self {
            line: self.line + lines,
            column: self.column,
        }
    }
}

/// One value of the tree with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
}

/// A mapping entry; keys are always text (as in Kubernetes' JSON), with their own position.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_pos: Pos,
    pub value: Node,
}

/// The YAML data model after tag resolution (YAML 1.2 core schema).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

impl Value {
    /// The name of the value's type, for error messages ("expected a string, found a list").
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a list",
            Value::Map(_) => "a mapping",
        }
    }
}

impl Node {
    pub fn new(pos: Pos, value: Value) -> Self {
        Self { pos, value }
    }

    /// The entry of a mapping node with this key.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|e| &e.value)
    }

    pub fn entry(&self, key: &str) -> Option<&Entry> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|e| e.key == key),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Where the field at `path` was written. When the path leads to something that is
    /// absent (a required field that is missing), the closest enclosing node is returned.
    pub fn locate(&self, path: &FieldPath) -> Pos {
        let mut node = self;
        let mut pos = self.pos;
        for segment in path.segments() {
            let next = match (segment, &node.value) {
                (Segment::Field(name) | Segment::Key(name), Value::Map(entries)) => {
                    match entries.iter().find(|e| &e.key == name) {
                        Some(entry) => {
                            // A field is shown where its key is written.
                            pos = entry.key_pos;
                            Some(&entry.value)
                        }
                        None => None,
                    }
                }
                (Segment::Index(i), Value::Seq(items)) => items.get(*i).inspect(|n| pos = n.pos),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        pos
    }
}
