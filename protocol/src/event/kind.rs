//! An event's kind, read from its own serde tag: the name is stated once, in the variant's
//! `#[serde(rename = "task.step")]`, and [`super::Event::kind`] is what serde would write as `kind` — never a
//! second table that could disagree.
//!
//! How: serde writes an adjacently tagged enum (`#[serde(tag = "kind", content = "data")]`) as a struct whose
//! first field is the tag, and the tag itself as a unit variant named by the `rename` (a `&'static str`). The
//! serializers here accept exactly that much and stop with the name as soon as they see it, so the payload is
//! never serialized: reading a kind costs a few calls, no allocation.

use std::fmt;

use serde::ser::{self, Impossible, Serialize, Serializer};

/// How reading stopped: with the tag's name, or on anything that is not the expected shape.
#[derive(Debug)]
pub(super) enum Stop {
    /// The tag, as serde names it.
    Found(&'static str),
    /// The value is not an adjacently tagged enum.
    Other,
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stop::Found(k) => write!(f, "kind {k}"),
            Stop::Other => f.write_str("not an adjacently tagged enum"),
        }
    }
}

impl std::error::Error for Stop {}

impl ser::Error for Stop {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Stop::Other
    }
}

/// The tag serde writes for `value`, an adjacently tagged enum; `None` for any other shape.
pub(super) fn tag_of<T: Serialize>(value: &T) -> Option<&'static str> {
    match value.serialize(Outer) {
        Err(Stop::Found(kind)) => Some(kind),
        _ => None,
    }
}

/// Refuses every scalar: neither the enum nor its tag is one.
macro_rules! refuse_scalars {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(fn $method(self, _: $ty) -> Result<(), Stop> {
            Err(Stop::Other)
        })*
    };
}

/// Refuses every compound and wrapper but the ones a serializer overrides.
macro_rules! refuse_the_rest {
    () => {
        refuse_scalars!(
            serialize_bool(bool),
            serialize_i8(i8),
            serialize_i16(i16),
            serialize_i32(i32),
            serialize_i64(i64),
            serialize_u8(u8),
            serialize_u16(u16),
            serialize_u32(u32),
            serialize_u64(u64),
            serialize_f32(f32),
            serialize_f64(f64),
            serialize_char(char),
            serialize_str(&str),
            serialize_bytes(&[u8]),
            serialize_unit_struct(&'static str),
        );

        fn serialize_none(self) -> Result<(), Stop> {
            Err(Stop::Other)
        }

        fn serialize_some<T: ?Sized + Serialize>(self, _: &T) -> Result<(), Stop> {
            Err(Stop::Other)
        }

        fn serialize_unit(self) -> Result<(), Stop> {
            Err(Stop::Other)
        }

        fn serialize_newtype_struct<T: ?Sized + Serialize>(
            self,
            _: &'static str,
            _: &T,
        ) -> Result<(), Stop> {
            Err(Stop::Other)
        }

        fn serialize_newtype_variant<T: ?Sized + Serialize>(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: &T,
        ) -> Result<(), Stop> {
            Err(Stop::Other)
        }

        fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Stop> {
            Err(Stop::Other)
        }

        fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Stop> {
            Err(Stop::Other)
        }

        fn serialize_tuple_struct(
            self,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleStruct, Stop> {
            Err(Stop::Other)
        }

        fn serialize_tuple_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleVariant, Stop> {
            Err(Stop::Other)
        }

        fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Stop> {
            Err(Stop::Other)
        }

        fn serialize_struct_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeStructVariant, Stop> {
            Err(Stop::Other)
        }
    };
}

/// Sees the enum: a struct of two fields, the tag first.
struct Outer;

impl Serializer for Outer {
    type Ok = ();
    type Error = Stop;
    type SerializeSeq = Impossible<(), Stop>;
    type SerializeTuple = Impossible<(), Stop>;
    type SerializeTupleStruct = Impossible<(), Stop>;
    type SerializeTupleVariant = Impossible<(), Stop>;
    type SerializeMap = Impossible<(), Stop>;
    type SerializeStruct = Fields;
    type SerializeStructVariant = Impossible<(), Stop>;

    refuse_the_rest!();

    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Result<(), Stop> {
        Err(Stop::Other)
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Fields, Stop> {
        Ok(Fields)
    }
}

/// The struct's fields: the first is the tag, and reading stops there.
struct Fields;

impl ser::SerializeStruct for Fields {
    type Ok = ();
    type Error = Stop;

    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Stop> {
        match value.serialize(Tag) {
            Err(found @ Stop::Found(_)) => Err(found),
            _ => Err(Stop::Other),
        }
    }

    fn end(self) -> Result<(), Stop> {
        Err(Stop::Other)
    }
}

/// Sees the tag: a unit variant whose name is the kind.
struct Tag;

impl Serializer for Tag {
    type Ok = ();
    type Error = Stop;
    type SerializeSeq = Impossible<(), Stop>;
    type SerializeTuple = Impossible<(), Stop>;
    type SerializeTupleStruct = Impossible<(), Stop>;
    type SerializeTupleVariant = Impossible<(), Stop>;
    type SerializeMap = Impossible<(), Stop>;
    type SerializeStruct = Impossible<(), Stop>;
    type SerializeStructVariant = Impossible<(), Stop>;

    refuse_the_rest!();

    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), Stop> {
        Err(Stop::Found(variant))
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Stop> {
        Err(Stop::Other)
    }
}
