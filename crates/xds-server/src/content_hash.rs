//! A hash of what a resource says, fed straight from its `Serialize` implementation.
//!
//! Equal resources of different proxies share one encoding, found by this hash, and the hash is
//! the version delta xDS sends with a resource. Protobuf bytes will not do (protobuf maps encode
//! in hash-map order, so equal resources can encode differently); Strait's own types serialize
//! in a fixed order. Every value goes to the hasher as its raw bytes with just enough framing to
//! be unambiguous — a length before strings and bytes, a marker before each element of a
//! sequence or map and before each field of a struct (another for a field left out), the index
//! of an enum's variant — and nothing a text format adds (field names, quotes, escapes, number
//! formatting): a cold sync hashes every load assignment it builds, and hashing their JSON text
//! was a fifth of that work.

use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::Hasher;

use serde::ser::{self, Serialize};

/// The hash of `value`'s content (SipHash-1-3 with fixed keys: equal in every process of one
/// build).
pub fn content_hash<T: Serialize + ?Sized>(value: &T) -> u64 {
    let mut feed = Feed(DefaultHasher::new());
    // Feeding a hasher cannot fail, so neither can this serializer.
    let _ = value.serialize(&mut feed);
    feed.0.finish()
}

const ELEMENT: u8 = 1;
const END: u8 = 0;
const SKIPPED: u8 = 2;

/// The serializer: writes into the hasher.
struct Feed(DefaultHasher);

/// The serializer's error type; never produced by it.
#[derive(Debug)]
struct Never;

impl fmt::Display for Never {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a type's own serialization failed")
    }
}

impl std::error::Error for Never {}

impl ser::Error for Never {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Never
    }
}

impl Feed {
    fn bytes(&mut self, b: &[u8]) {
        self.0.write_usize(b.len());
        self.0.write(b);
    }
}

type Done = Result<(), Never>;

impl ser::Serializer for &mut Feed {
    type Ok = ();
    type Error = Never;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    fn serialize_bool(self, v: bool) -> Done {
        self.0.write_u8(u8::from(v));
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Done {
        self.0.write_i8(v);
        Ok(())
    }
    fn serialize_i16(self, v: i16) -> Done {
        self.0.write_i16(v);
        Ok(())
    }
    fn serialize_i32(self, v: i32) -> Done {
        self.0.write_i32(v);
        Ok(())
    }
    fn serialize_i64(self, v: i64) -> Done {
        self.0.write_i64(v);
        Ok(())
    }
    fn serialize_i128(self, v: i128) -> Done {
        self.0.write_i128(v);
        Ok(())
    }
    fn serialize_u8(self, v: u8) -> Done {
        self.0.write_u8(v);
        Ok(())
    }
    fn serialize_u16(self, v: u16) -> Done {
        self.0.write_u16(v);
        Ok(())
    }
    fn serialize_u32(self, v: u32) -> Done {
        self.0.write_u32(v);
        Ok(())
    }
    fn serialize_u64(self, v: u64) -> Done {
        self.0.write_u64(v);
        Ok(())
    }
    fn serialize_u128(self, v: u128) -> Done {
        self.0.write_u128(v);
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> Done {
        self.0.write_u32(v.to_bits());
        Ok(())
    }
    fn serialize_f64(self, v: f64) -> Done {
        self.0.write_u64(v.to_bits());
        Ok(())
    }
    fn serialize_char(self, v: char) -> Done {
        self.0.write_u32(u32::from(v));
        Ok(())
    }
    fn serialize_str(self, v: &str) -> Done {
        self.bytes(v.as_bytes());
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Done {
        self.bytes(v);
        Ok(())
    }
    fn serialize_none(self) -> Done {
        self.0.write_u8(0);
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Done {
        self.0.write_u8(1);
        value.serialize(self)
    }
    fn serialize_unit(self) -> Done {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> Done {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, index: u32, _: &'static str) -> Done {
        self.0.write_u32(index);
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, value: &T) -> Done {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        index: u32,
        _: &'static str,
        value: &T,
    ) -> Done {
        self.0.write_u32(index);
        value.serialize(self)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self, Never> {
        Ok(self)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self, Never> {
        Ok(self)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, Never> {
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        index: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, Never> {
        self.0.write_u32(index);
        Ok(self)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self, Never> {
        Ok(self)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, Never> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        index: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, Never> {
        self.0.write_u32(index);
        Ok(self)
    }
}

impl Feed {
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Done {
        self.0.write_u8(ELEMENT);
        value.serialize(self)
    }
    fn end(&mut self) -> Done {
        self.0.write_u8(END);
        Ok(())
    }
}

/// Sequences, tuples and tuple variants: each element after a marker, then the end.
macro_rules! elements {
    ($($kind:ident::$add:ident),*) => {$(
        impl ser::$kind for &mut Feed {
            type Ok = ();
            type Error = Never;
            fn $add<T: Serialize + ?Sized>(&mut self, value: &T) -> Done {
                self.element(value)
            }
            fn end(self) -> Done {
                Feed::end(self)
            }
        }
    )*};
}

elements!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

/// Structs and struct variants: each field present after a marker, each field left out as
/// another, then the end.
macro_rules! fields {
    ($($kind:ident),*) => {$(
        impl ser::$kind for &mut Feed {
            type Ok = ();
            type Error = Never;
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                _: &'static str,
                value: &T,
            ) -> Done {
                self.element(value)
            }
            fn skip_field(&mut self, _: &'static str) -> Done {
                self.0.write_u8(SKIPPED);
                Ok(())
            }
            fn end(self) -> Done {
                Feed::end(self)
            }
        }
    )*};
}

fields!(SerializeStruct, SerializeStructVariant);

impl ser::SerializeMap for &mut Feed {
    type Ok = ();
    type Error = Never;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Done {
        self.element(key)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Done {
        value.serialize(&mut **self)
    }
    fn end(self) -> Done {
        Feed::end(self)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Serialize;

    use super::content_hash;

    #[derive(Serialize)]
    struct Endpoint {
        address: String,
        port: u16,
        #[serde(skip_serializing_if = "Option::is_none")]
        zone: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        subzone: Option<String>,
        weight: Option<u32>,
    }

    fn endpoint(address: &str, zone: Option<&str>, subzone: Option<&str>) -> Endpoint {
        Endpoint {
            address: address.into(),
            port: 80,
            zone: zone.map(Into::into),
            subzone: subzone.map(Into::into),
            weight: None,
        }
    }

    #[derive(Serialize)]
    enum Choice {
        Plain,
        Named(String),
        Pair(u8, u8),
        Shaped { a: u8 },
    }

    #[test]
    fn equal_content_hashes_equal_and_each_difference_differs() {
        let a = endpoint("10.0.0.1", Some("z1"), None);
        assert_eq!(
            content_hash(&a),
            content_hash(&endpoint("10.0.0.1", Some("z1"), None))
        );
        let different = [
            endpoint("10.0.0.2", Some("z1"), None),
            // The same string in the other skippable field: the markers tell them apart.
            endpoint("10.0.0.1", None, Some("z1")),
            endpoint("10.0.0.1", None, None),
            Endpoint {
                weight: Some(0),
                ..endpoint("10.0.0.1", Some("z1"), None)
            },
            Endpoint {
                port: 81,
                ..endpoint("10.0.0.1", Some("z1"), None)
            },
        ];
        for d in &different {
            assert_ne!(content_hash(&a), content_hash(d));
        }
    }

    #[test]
    fn where_one_string_ends_and_the_next_begins_counts() {
        assert_ne!(content_hash(&("ab", "c")), content_hash(&("a", "bc")));
        assert_ne!(
            content_hash(&vec![vec![1u8], vec![2]]),
            content_hash(&vec![vec![1u8, 2]])
        );
        let split: BTreeMap<&str, Vec<&str>> = BTreeMap::from([("k", vec!["a", "b"])]);
        let joined: BTreeMap<&str, Vec<&str>> = BTreeMap::from([("k", vec!["ab"])]);
        assert_ne!(content_hash(&split), content_hash(&joined));
    }

    #[test]
    fn enum_variants_are_told_apart() {
        let all = [
            content_hash(&Choice::Plain),
            content_hash(&Choice::Named(String::new())),
            content_hash(&Choice::Pair(0, 0)),
            content_hash(&Choice::Shaped { a: 0 }),
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_ne!(content_hash(&Some(0u8)), content_hash(&None::<u8>));
    }
}
