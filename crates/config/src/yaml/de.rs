//! Deserializes typed configuration from a [`Node`] tree, knowing at every step which field
//! it is in, so every problem carries its [`FieldPath`].
//!
//! Unknown fields are found here, not by `deny_unknown_fields`: `deserialize_struct` is told
//! the struct's field names, records every key that is not one of them (with a suggestion),
//! and goes on, so one typo never hides the next. Structs whose serde name starts with `~`
//! are *open*: their unknown fields are ignored (used for Kubernetes objects whose full
//! schema Strait does not model, such as a Pod's containers).
//!
//! As in Kubernetes, a field written as `null` counts as absent.

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};

use super::{Entry, Node, Value};
use crate::issue::{Issue, IssueKind};
use crate::path::FieldPath;

/// Reads a `T` from `node`, which sits at `base` in its document.
/// On success also returns the warnings-or-errors found along the way (unknown fields);
/// on failure, every problem found, the fatal one last.
pub fn from_node<T: DeserializeOwned>(
    node: &Node,
    base: &FieldPath,
) -> Result<(T, Vec<Issue>), Vec<Issue>> {
    let sink = RefCell::new(Vec::new());
    let result = T::deserialize(NodeDeserializer {
        node,
        path: base.clone(),
        sink: &sink,
    });
    let mut issues = sink.into_inner();
    match result {
        Ok(v) => Ok((v, issues)),
        Err(e) => {
            issues.push(e.into_issue(base));
            Err(issues)
        }
    }
}

/// The error type of [`NodeDeserializer`]; becomes an [`Issue`].
#[derive(Debug, Clone)]
pub struct DeError {
    kind: IssueKind,
    message: String,
    path: Option<FieldPath>,
    missing_field: Option<&'static str>,
}

impl DeError {
    fn new(kind: IssueKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            path: None,
            missing_field: None,
        }
    }

    /// Records where the error happened, unless a deeper place is already known.
    fn at(mut self, path: &FieldPath) -> Self {
        if self.path.is_none() {
            self.path = Some(match self.missing_field.take() {
                Some(field) => path.field(field),
                None => path.clone(),
            });
        }
        self
    }

    fn into_issue(self, base: &FieldPath) -> Issue {
        let path = match (self.path, self.missing_field) {
            (Some(p), _) => p,
            (None, Some(field)) => base.field(field),
            (None, None) => base.clone(),
        };
        Issue::error(self.kind, path, self.message)
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.phrase(), self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError::new(IssueKind::Invalid, msg.to_string())
    }

    fn missing_field(field: &'static str) -> Self {
        let mut e = DeError::new(IssueKind::Required, "this field must be set");
        e.missing_field = Some(field);
        e
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        DeError::new(
            IssueKind::Unsupported,
            unsupported_message(variant, expected),
        )
    }

    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        DeError::new(
            IssueKind::WrongType,
            format!("found {unexp}, expected {exp}"),
        )
    }

    fn invalid_value(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        DeError::new(IssueKind::Invalid, format!("{unexp}: expected {exp}"))
    }

    fn duplicate_field(field: &'static str) -> Self {
        DeError::new(
            IssueKind::Duplicate,
            format!("field \"{field}\" is set twice"),
        )
    }
}

fn unsupported_message(value: &str, expected: &[&str]) -> String {
    let allowed: Vec<String> = expected.iter().map(|v| format!("\"{v}\"")).collect();
    format!("\"{value}\": supported values: {}", allowed.join(", "))
}

/// A deserializer positioned at one node of the tree.
pub struct NodeDeserializer<'a> {
    node: &'a Node,
    path: FieldPath,
    sink: &'a RefCell<Vec<Issue>>,
}

impl<'a> NodeDeserializer<'a> {
    fn wrong_type(&self, wanted: &str) -> DeError {
        let found = self.node.value.type_name();
        let hint = match (&self.node.value, wanted) {
            (Value::Int(_) | Value::Float(_) | Value::Bool(_), "text") => {
                " (write it in quotes to make it text)"
            }
            (Value::Str(_), "an integer" | "a number") => " (remove the quotes)",
            (Value::Str(_), "true or false") => " (write true or false without quotes)",
            _ => "",
        };
        DeError::new(
            IssueKind::WrongType,
            format!("must be {wanted}, found {found}{hint}"),
        )
        .at(&self.path)
    }

    fn int_in<T: TryFrom<i128>>(&self, min: i128, max: i128) -> Result<T, DeError> {
        match self.node.value {
            Value::Int(v) if v >= min && v <= max => {
                T::try_from(v).map_err(|_| self.out_of_range(v, min, max))
            }
            Value::Int(v) => Err(self.out_of_range(v, min, max)),
            Value::Float(f) if f.fract() == 0.0 && f >= min as f64 && f <= max as f64 => {
                T::try_from(f as i128).map_err(|_| self.wrong_type("an integer"))
            }
            _ => Err(self.wrong_type("an integer")),
        }
    }

    fn out_of_range(&self, v: i128, min: i128, max: i128) -> DeError {
        let msg = if min == 0 && v < 0 {
            format!("{v}: must be greater than or equal to 0")
        } else {
            format!("{v}: must be between {min} and {max}")
        };
        DeError::new(IssueKind::Invalid, msg).at(&self.path)
    }
}

macro_rules! deserialize_int {
    ($method:ident, $visit:ident, $ty:ty) => {
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            let v: $ty = self.int_in(<$ty>::MIN as i128, <$ty>::MAX as i128)?;
            visitor.$visit(v).map_err(|e: DeError| e.at(&self.path))
        }
    };
}

impl<'de> de::Deserializer<'de> for NodeDeserializer<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let path = self.path.clone();
        let r = match &self.node.value {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(*b),
            Value::Int(i) => match i64::try_from(*i) {
                Ok(v) => visitor.visit_i64(v),
                Err(_) => visitor.visit_i128(*i),
            },
            Value::Float(f) => visitor.visit_f64(*f),
            Value::Str(s) => visitor.visit_str(s),
            Value::Seq(items) => visitor.visit_seq(SeqAccess::new(&self, items)),
            Value::Map(entries) => visitor.visit_map(MapAccess::new(&self, entries, false)),
        };
        r.map_err(|e: DeError| e.at(&path))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.node.value {
            Value::Bool(b) => visitor.visit_bool(b).map_err(|e: DeError| e.at(&self.path)),
            _ => Err(self.wrong_type("true or false")),
        }
    }

    deserialize_int!(deserialize_i8, visit_i8, i8);
    deserialize_int!(deserialize_i16, visit_i16, i16);
    deserialize_int!(deserialize_i32, visit_i32, i32);
    deserialize_int!(deserialize_i64, visit_i64, i64);
    deserialize_int!(deserialize_u8, visit_u8, u8);
    deserialize_int!(deserialize_u16, visit_u16, u16);
    deserialize_int!(deserialize_u32, visit_u32, u32);
    deserialize_int!(deserialize_u64, visit_u64, u64);

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let v = match self.node.value {
            Value::Float(f) => f,
            Value::Int(i) => i as f64,
            _ => return Err(self.wrong_type("a number")),
        };
        visitor.visit_f64(v).map_err(|e: DeError| e.at(&self.path))
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Str(s) => visitor.visit_str(s).map_err(|e: DeError| e.at(&self.path)),
            Value::Null => visitor.visit_str("").map_err(|e: DeError| e.at(&self.path)),
            _ => Err(self.wrong_type("text")),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let path = self.path.clone();
        match self.node.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
        .map_err(|e: DeError| e.at(&path))
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit().map_err(|e: DeError| e.at(&self.path))
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let path = self.path.clone();
        visitor
            .visit_newtype_struct(self)
            .map_err(|e: DeError| e.at(&path))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = match &self.node.value {
            Value::Seq(items) => visitor.visit_seq(SeqAccess::new(&self, items)),
            Value::Null => visitor.visit_seq(SeqAccess::new(&self, &[])),
            _ => return Err(self.wrong_type("a list")),
        };
        r.map_err(|e: DeError| e.at(&self.path))
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = match &self.node.value {
            Value::Map(entries) => visitor.visit_map(MapAccess::new(&self, entries, false)),
            Value::Null => visitor.visit_map(MapAccess::new(&self, &[], false)),
            _ => return Err(self.wrong_type("a mapping")),
        };
        r.map_err(|e: DeError| e.at(&self.path))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let entries: &[Entry] = match &self.node.value {
            Value::Map(entries) => entries,
            Value::Null => &[],
            _ => return Err(self.wrong_type("a mapping")),
        };
        let open = name.starts_with('~');
        if !open {
            for entry in entries {
                if !fields.contains(&entry.key.as_str()) {
                    self.sink.borrow_mut().push(Issue::error(
                        IssueKind::UnknownField,
                        self.path.field(&entry.key),
                        unknown_field_message(&entry.key, fields),
                    ));
                }
            }
        }
        let known: Vec<&Entry> = entries
            .iter()
            .filter(|e| fields.contains(&e.key.as_str()) && e.value.value != Value::Null)
            .collect();
        visitor
            .visit_map(MapAccess::for_struct(&self, known))
            .map_err(|e: DeError| e.at(&self.path))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Str(s) if variants.contains(&s.as_str()) => visitor
                .visit_enum(s.as_str().into_deserializer())
                .map_err(|e: DeError| e.at(&self.path)),
            Value::Str(s) => Err(DeError::new(
                IssueKind::Unsupported,
                unsupported_message(s, variants),
            )
            .at(&self.path)),
            _ => Err(self.wrong_type("text naming one of the allowed values")),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }
}

fn unknown_field_message(key: &str, fields: &[&str]) -> String {
    let mut msg = format!("\"{key}\" is not a field here");
    if let Some(best) = closest(key, fields) {
        msg.push_str(&format!("; did you mean \"{best}\"?"));
    } else if fields.len() <= 16 {
        let known: Vec<String> = fields.iter().map(|f| format!("\"{f}\"")).collect();
        msg.push_str(&format!(" (known fields: {})", known.join(", ")));
    }
    msg.push_str(" (check the spelling and the indentation)");
    msg
}

/// The field name a typo most likely meant: same letters ignoring case and `_`/`-`, or within
/// two edits.
fn closest<'f>(key: &str, fields: &[&'f str]) -> Option<&'f str> {
    let squash = |s: &str| -> String {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect()
    };
    let k = squash(key);
    if let Some(f) = fields.iter().find(|f| squash(f) == k) {
        return Some(f);
    }
    fields
        .iter()
        .map(|f| (edit_distance(&k, &squash(f)), *f))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, f)| f)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

struct SeqAccess<'a> {
    items: std::slice::Iter<'a, Node>,
    index: usize,
    path: FieldPath,
    sink: &'a RefCell<Vec<Issue>>,
}

impl<'a> SeqAccess<'a> {
    fn new(parent: &NodeDeserializer<'a>, items: &'a [Node]) -> Self {
        Self {
            items: items.iter(),
            index: 0,
            path: parent.path.clone(),
            sink: parent.sink,
        }
    }
}

impl<'de> de::SeqAccess<'de> for SeqAccess<'_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some(node) = self.items.next() else {
            return Ok(None);
        };
        let path = self.path.index(self.index);
        self.index += 1;
        seed.deserialize(NodeDeserializer {
            node,
            path,
            sink: self.sink,
        })
        .map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapAccess<'a> {
    entries: Vec<&'a Entry>,
    next: usize,
    is_struct: bool,
    path: FieldPath,
    sink: &'a RefCell<Vec<Issue>>,
}

impl<'a> MapAccess<'a> {
    fn new(parent: &NodeDeserializer<'a>, entries: &'a [Entry], is_struct: bool) -> Self {
        Self {
            entries: entries.iter().collect(),
            next: 0,
            is_struct,
            path: parent.path.clone(),
            sink: parent.sink,
        }
    }

    fn for_struct(parent: &NodeDeserializer<'a>, entries: Vec<&'a Entry>) -> Self {
        Self {
            entries,
            next: 0,
            is_struct: true,
            path: parent.path.clone(),
            sink: parent.sink,
        }
    }

    fn child_path(&self, key: &str) -> FieldPath {
        if self.is_struct {
            self.path.field(key)
        } else {
            self.path.key(key)
        }
    }
}

impl<'de> de::MapAccess<'de> for MapAccess<'_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some(entry) = self.entries.get(self.next) else {
            return Ok(None);
        };
        let key: de::value::StrDeserializer<'_, DeError> = entry.key.as_str().into_deserializer();
        seed.deserialize(key)
            .map(Some)
            .map_err(|e: DeError| e.at(&self.child_path(&entry.key)))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let Some(entry) = self.entries.get(self.next) else {
            return Err(DeError::new(
                IssueKind::Invalid,
                "value requested before key",
            ));
        };
        self.next += 1;
        let path = self.child_path(&entry.key);
        seed.deserialize(NodeDeserializer {
            node: &entry.value,
            path,
            sink: self.sink,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len() - self.next)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;
    use crate::yaml::{Limits, parse_document, split_documents};

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "camelCase")]
    #[allow(dead_code)] // fields exist to be deserialized
    struct Spec {
        host: String,
        #[serde(default)]
        ports: Vec<Port>,
        mode: Option<Mode>,
        #[serde(default)]
        labels: BTreeMap<String, String>,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Port {
        number: u32,
        name: Option<String>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[allow(clippy::upper_case_acronyms)]
    enum Mode {
        STRICT,
        PERMISSIVE,
    }

    fn read(text: &str) -> Result<(Spec, Vec<Issue>), Vec<Issue>> {
        let docs = split_documents(text);
        let node = parse_document(&docs[0], &Limits::default()).unwrap();
        from_node(&node, &FieldPath::root().field("spec"))
    }

    #[test]
    fn every_unknown_field_is_reported_with_a_suggestion() {
        let (_, issues) = read("host: a\nprots: []\nmdoe: STRICT\n").unwrap();
        assert_eq!(issues.len(), 2);
        assert_eq!(issues[0].path.to_string(), "spec.prots");
        assert!(
            issues[0].message.contains("did you mean \"ports\""),
            "{}",
            issues[0]
        );
        assert!(
            issues[1].message.contains("did you mean \"mode\""),
            "{}",
            issues[1]
        );
    }

    #[test]
    fn a_missing_required_field_is_named() {
        let issues = read("ports: []\n").unwrap_err();
        let last = issues.last().unwrap();
        assert_eq!(last.kind, IssueKind::Required);
        assert_eq!(last.path.to_string(), "spec.host");
    }

    #[test]
    fn type_and_range_errors_point_into_lists() {
        let issues = read("host: a\nports:\n- number: 1\n- number: -3\n").unwrap_err();
        let last = issues.last().unwrap();
        assert_eq!(last.path.to_string(), "spec.ports[1].number");
        assert_eq!(last.kind, IssueKind::Invalid);
        let issues = read("host: a\nports:\n- number: \"80\"\n").unwrap_err();
        assert!(issues.last().unwrap().message.contains("remove the quotes"));
    }

    #[test]
    fn enum_values_outside_the_list_are_unsupported() {
        let issues = read("host: a\nmode: BLAH\n").unwrap_err();
        let last = issues.last().unwrap();
        assert_eq!(last.kind, IssueKind::Unsupported);
        assert_eq!(
            last.to_string(),
            "spec.mode: Unsupported value: \"BLAH\": supported values: \"STRICT\", \"PERMISSIVE\""
        );
    }

    #[test]
    fn numbers_where_text_is_expected_are_refused_as_kubernetes_does() {
        let issues = read("host: a\nlabels:\n  version: 1\n").unwrap_err();
        let last = issues.last().unwrap();
        assert_eq!(last.path.to_string(), "spec.labels[version]");
        assert!(last.message.contains("quotes"));
    }

    #[test]
    fn null_fields_count_as_absent() {
        let (spec, _) = read("host: a\nmode: ~\nports:\n").unwrap();
        assert_eq!(spec.mode, None);
        assert!(spec.ports.is_empty());
    }
}
