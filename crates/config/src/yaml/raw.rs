//! The seam to serde-saphyr: turns one document's text into a [`Node`] tree.
//!
//! Every node is read through `Spanned` so it keeps its line and column; keys of any scalar
//! type become text, as they do when Kubernetes converts YAML to JSON.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{Location, Spanned};

use super::{Entry, Limits, Node, ParseFailure, Pos, Value};
use crate::issue::IssueKind;

pub(super) fn parse(text: &str, limits: &Limits) -> Result<Node, ParseFailure> {
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: limits.max_depth,
            flow_nesting_limit: limits.max_depth,
            max_events: limits.max_events,
            max_aliases: limits.max_aliases,
            max_anchors: limits.max_aliases,
            max_documents: 1,
        },
        duplicate_keys: serde_saphyr::options::DuplicateKeyPolicy::Error,
    };
    match serde_saphyr::from_str_with_options::<Spanned<RawValue>>(text, options) {
        Ok(spanned) => {
            let mut node = Node::new(pos(&spanned.referenced), spanned.value.0);
            let lines: Vec<&str> = text.lines().collect();
            colon_before_flow_indicator_is_text(&mut node, &lines);
            Ok(node)
        }
        Err(err) => Err(describe(&err)),
    }
}

/// Kubernetes reads YAML with go-yaml, for which a `:` ends a plain scalar only when a space
/// follows it. In a flow collection YAML 1.2 also ends it before `,`, `]` or `}`, so
/// `[1.2.3.4, 2001:db8::]` would hold a mapping `{"2001:db8:": null}`. Users write IPv6
/// addresses like that and kubectl accepts them: such one-entry mappings with no value, whose
/// key is followed in the text by `:` and a flow indicator, are turned back into the text.
fn colon_before_flow_indicator_is_text(node: &mut Node, lines: &[&str]) {
    match &mut node.value {
        Value::Seq(items) => {
            for item in items.iter_mut() {
                // An implicit one-pair mapping (`[a: b]`) starts at its key; `{a:}` does not.
                if let Value::Map(entries) = &item.value
                    && let [entry] = entries.as_slice()
                    && entry.value.value == Value::Null
                    && entry.key_pos == item.pos
                    && key_then_colon_then_flow_indicator(&entry.key, entry.key_pos, lines)
                {
                    item.value = Value::Str(format!("{}:", entry.key));
                } else {
                    colon_before_flow_indicator_is_text(item, lines);
                }
            }
        }
        Value::Map(entries) => entries
            .iter_mut()
            .for_each(|e| colon_before_flow_indicator_is_text(&mut e.value, lines)),
        _ => {}
    }
}

fn key_then_colon_then_flow_indicator(key: &str, at: Pos, lines: &[&str]) -> bool {
    let Some(line) = (at.line as usize).checked_sub(1).and_then(|i| lines.get(i)) else {
        return false;
    };
    let rest: String = line
        .chars()
        .skip((at.column as usize).saturating_sub(1))
        .collect();
    rest.strip_prefix(key)
        .and_then(|r| r.strip_prefix(':'))
        .and_then(|r| r.chars().next())
        .is_some_and(|c| matches!(c, ',' | ']' | '}'))
}

fn pos(loc: &Location) -> Pos {
    Pos::new(
        u32::try_from(loc.line()).unwrap_or(u32::MAX),
        u32::try_from(loc.column()).unwrap_or(u32::MAX),
    )
}

/// A plain one-line message and a position, without the snippet serde-saphyr can draw.
fn describe(err: &serde_saphyr::Error) -> ParseFailure {
    let rendered = err.to_string();
    let first = rendered
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    // serde-saphyr writes "error: line X column Y: <message>"; the caller adds the file's own
    // position, so keep only the message.
    let mut message = first.strip_prefix("error: ").unwrap_or(first).to_string();
    if let Some(rest) = message.strip_prefix("line ")
        && let Some((_, tail)) = rest.split_once(": ")
    {
        message = tail.to_string();
    }
    if let Some(i) = message.find(", set DuplicateKeyPolicy") {
        message.truncate(i);
        message.push_str(" (each key may appear once in a mapping)");
    }
    if message.is_empty() {
        message = "the document could not be parsed".to_string();
    }
    let limit = message.contains("budget breached")
        || message.contains("recursion limit")
        || ["AliasReplay", "AliasExpansion"]
            .iter()
            .any(|k| format!("{err:?}").contains(k));
    let kind = if limit {
        IssueKind::Limit
    } else {
        IssueKind::Syntax
    };
    if limit {
        message = format!(
            "{message} (the document exceeds a safety limit for nesting depth, size or alias \
             expansion; real configuration stays far below it: look for a YAML bomb or a \
             runaway generated file)"
        );
    }
    let at = err.location().map(|l| pos(&l)).filter(|p| p.line != 0);
    (kind, (message, at))
}

/// A value whose children keep their positions.
struct RawValue(Value);

/// Stack kept free before descending one level; serde-saphyr's frames for one level of
/// nesting take tens of kilobytes in unoptimised builds.
const STACK_RED_ZONE: usize = 256 * 1024;
/// Size of each stack segment added when the red zone is reached.
const STACK_SEGMENT: usize = 4 * 1024 * 1024;

impl<'de> Deserialize<'de> for RawValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Nesting is bounded by `Limits::max_depth`; growing the stack on demand makes that
        // bound safe on any thread, whatever its stack size.
        stacker::maybe_grow(STACK_RED_ZONE, STACK_SEGMENT, || {
            d.deserialize_any(ValueVisitor).map(RawValue)
        })
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Int(v.into()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Value, E> {
        i128::try_from(v)
            .map(Value::Int)
            .map_err(|_| E::custom("integer is too large"))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
        Ok(Value::Str(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<RawValue>>()? {
            items.push(Node::new(pos(&item.referenced), item.value.0));
        }
        Ok(Value::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<RawKey>>()? {
            let value = map.next_value::<Spanned<RawValue>>()?;
            entries.push(Entry {
                key: key.value.0,
                key_pos: pos(&key.referenced),
                value: Node::new(pos(&value.referenced), value.value.0),
            });
        }
        Ok(Value::Map(entries))
    }
}

/// A mapping key: any scalar, as text.
struct RawKey(String);

impl<'de> Deserialize<'de> for RawKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(KeyVisitor).map(RawKey)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a scalar mapping key")
    }
    fn visit_bool<E>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i64<E>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u64<E>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i128<E>(self, v: i128) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u128<E>(self, v: u128) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_f64<E>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_str<E>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_string<E>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
    fn visit_unit<E>(self) -> Result<String, E> {
        Ok("null".to_string())
    }
    fn visit_none<E>(self) -> Result<String, E> {
        Ok("null".to_string())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<String, A::Error> {
        Err(de::Error::custom(
            "a list cannot be a mapping key; keys must be text",
        ))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<String, A::Error> {
        Err(de::Error::custom(
            "a mapping cannot be a mapping key; keys must be text",
        ))
    }
}
