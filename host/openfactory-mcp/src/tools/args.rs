//! Tool arguments that always deserialize.
//!
//! rmcp answers an argument serde rejects with `failed to deserialize parameters: …`, which
//! neither says what the field is for nor how to fix it. So every field of a tool's
//! arguments is a wrapper from here: [`Required`], [`Optional`] or [`Bounded`]. Their
//! `Deserialize` accepts any JSON value (or none) and records what it found; [`Field::take`]
//! turns that into the typed value, or into an error that names the field and the fix.
//! Their `JsonSchema` is the target type's own, so `tools/list` shows the real types, bounds
//! and defaults.
//!
//! [`tool_args!`] declares an arguments struct: the struct itself, its JSON Schema (each
//! property described by its doc comment, `required` from the wrappers) and
//! [`ToolArgs::validate`], which gives the checked arguments as a second, plain struct.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{Deserialize, Deserializer, Visitor};
use serde_json::{Map, Value};

use openfactory_core::rules::json_kind as kind;

/// A type a JSON argument is read as.
pub trait ArgType: JsonSchema + Sized {
    /// The value (never `null`) as `Self`, or what is wrong with it: the text after `field: `.
    fn from_json(value: Value) -> Result<Self, String>;
}

impl ArgType for String {
    fn from_json(value: Value) -> Result<Self, String> {
        match value {
            Value::String(s) => Ok(s),
            other => Err(format!("expected a string, got {}", kind(&other))),
        }
    }
}

impl ArgType for bool {
    fn from_json(value: Value) -> Result<Self, String> {
        match value {
            Value::Bool(b) => Ok(b),
            other => Err(format!("expected true or false, got {}", kind(&other))),
        }
    }
}

impl ArgType for i64 {
    fn from_json(value: Value) -> Result<Self, String> {
        match whole(&value) {
            Whole::Fits(n) => Ok(n),
            Whole::TooLarge(n) => Err(format!("{n} is too large")),
            Whole::Not => Err(format!("expected a whole number, got {}", got(&value))),
        }
    }
}

/// The service's ids, checked where the argument is read: `build_id: `x` is
/// not a build id (12 hex digits, …); list_builds shows your builds`.
macro_rules! id_args {
    ($($id:ident),*) => {$(
        impl ArgType for openfactory_service::$id {
            fn from_json(value: Value) -> Result<Self, String> {
                let text = String::from_json(value)?;
                openfactory_service::$id::check(&text).map_err(|e| crate::wording::error_text(&e))
            }
        }
    )*};
}
id_args!(BuildId, RunId, VmName, RecipeId);

/// A build status filter: one of the statuses, by name.
impl ArgType for openfactory_store::BuildStatus {
    fn from_json(value: Value) -> Result<Self, String> {
        String::from_json(value)?.parse()
    }
}

/// Any JSON value, advertised with `S`'s schema: for arguments that a later check reads with
/// better errors than serde would give (a recipe is validated with a diagnostic per field).
pub struct Raw<S>(pub Value, PhantomData<S>);

impl<S> Raw<S> {
    pub fn into_value(self) -> Value {
        self.0
    }
}

impl<S> fmt::Debug for Raw<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<S: JsonSchema> JsonSchema for Raw<S> {
    fn inline_schema() -> bool {
        S::inline_schema()
    }
    fn schema_name() -> Cow<'static, str> {
        S::schema_name()
    }
    fn schema_id() -> Cow<'static, str> {
        S::schema_id()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        S::json_schema(generator)
    }
}

impl<S: JsonSchema> ArgType for Raw<S> {
    fn from_json(value: Value) -> Result<Self, String> {
        Ok(Raw(value, PhantomData))
    }
}

/// What a caller gave for one field.
#[derive(Debug)]
enum Given<T> {
    /// Missing, or `null`.
    Absent,
    Valid(T),
    /// What is wrong with it.
    Invalid(String),
}

impl<T> Given<T> {
    fn read(value: Value, parse: impl FnOnce(Value) -> Result<T, String>) -> Self {
        if value.is_null() {
            return Given::Absent;
        }
        match parse(value) {
            Ok(t) => Given::Valid(t),
            Err(problem) => Given::Invalid(problem),
        }
    }
}

/// Reads any JSON value, or none: serde's derive asks a missing field for an option
/// (`deserialize_option` then `visit_none`), so a field needs no `#[serde(default)]`.
fn deserialize_given<'de, D, T>(
    deserializer: D,
    parse: fn(Value) -> Result<T, String>,
) -> Result<Given<T>, D::Error>
where
    D: Deserializer<'de>,
{
    struct AnyValue<T>(fn(Value) -> Result<T, String>);
    impl<'de, T> Visitor<'de> for AnyValue<T> {
        type Value = Given<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_none<E>(self) -> Result<Given<T>, E> {
            Ok(Given::Absent)
        }
        fn visit_unit<E>(self) -> Result<Given<T>, E> {
            Ok(Given::Absent)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Given<T>, D::Error> {
            Ok(Given::read(Value::deserialize(d)?, self.0))
        }
    }
    deserializer.deserialize_option(AnyValue(parse))
}

/// One field of a tool's arguments, as [`tool_args!`] sees it.
pub trait Field: JsonSchema {
    /// The checked value.
    type Out;
    /// Listed in the schema's `required`.
    const REQUIRED: bool;
    /// The checked value, or an error naming `field`; `about` is the field's doc comment.
    fn take(self, field: &str, about: &str) -> Result<Self::Out, String>;
}

/// A field the caller must give (`null` counts as not given).
#[derive(Debug)]
pub struct Required<T>(Given<T>);

/// A field the caller may leave out or set to `null`.
#[derive(Debug)]
pub struct Optional<T>(Given<T>);

macro_rules! same_schema_as {
    ($wrapper:ident) => {
        impl<T: JsonSchema> JsonSchema for $wrapper<T> {
            fn inline_schema() -> bool {
                T::inline_schema()
            }
            fn schema_name() -> Cow<'static, str> {
                T::schema_name()
            }
            fn schema_id() -> Cow<'static, str> {
                T::schema_id()
            }
            fn json_schema(generator: &mut SchemaGenerator) -> Schema {
                T::json_schema(generator)
            }
        }

        impl<'de, T: ArgType> Deserialize<'de> for $wrapper<T> {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserialize_given(deserializer, T::from_json).map($wrapper)
            }
        }
    };
}
same_schema_as!(Required);
same_schema_as!(Optional);

impl<T: ArgType> Field for Required<T> {
    type Out = T;
    const REQUIRED: bool = true;
    fn take(self, field: &str, about: &str) -> Result<T, String> {
        match self.0 {
            Given::Valid(t) => Ok(t),
            Given::Invalid(problem) => Err(format!("{field}: {problem}")),
            Given::Absent => Err(format!("{field}: required; {}", hint(about))),
        }
    }
}

impl<T: ArgType> Field for Optional<T> {
    type Out = Option<T>;
    const REQUIRED: bool = false;
    fn take(self, field: &str, _about: &str) -> Result<Option<T>, String> {
        match self.0 {
            Given::Valid(t) => Ok(Some(t)),
            Given::Invalid(problem) => Err(format!("{field}: {problem}")),
            Given::Absent => Ok(None),
        }
    }
}

/// How an out-of-range [`Bounded`] says what to do.
pub trait RangeHint {
    fn hint(min: i64, max: i64, default: i64) -> String;
}

/// `use 1 to 100 (default 20)`.
pub struct WithDefault;

impl RangeHint for WithDefault {
    fn hint(min: i64, max: i64, default: i64) -> String {
        format!("use {min} to {max} (default {default})")
    }
}

/// `use 0 to 50 and call again to wait longer`: for `wait_seconds`.
pub struct CallAgain;

impl RangeHint for CallAgain {
    fn hint(min: i64, max: i64, _default: i64) -> String {
        format!("use {min} to {max} and call again to wait longer")
    }
}

/// An optional whole number from `MIN` to `MAX`, `DEFAULT` when not given. Its schema says
/// so (`minimum`, `maximum`, `default`).
pub struct Bounded<const MIN: i64, const MAX: i64, const DEFAULT: i64, H = WithDefault>(
    Given<i64>,
    PhantomData<H>,
);

/// `wait_seconds`: 0 up to what the service waits at most in one call.
pub type WaitSeconds =
    Bounded<0, { openfactory_service::builds::MAX_WAIT_SECONDS as i64 }, 0, CallAgain>;

impl<const MIN: i64, const MAX: i64, const DEFAULT: i64, H> fmt::Debug
    for Bounded<MIN, MAX, DEFAULT, H>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<const MIN: i64, const MAX: i64, const DEFAULT: i64, H: RangeHint>
    Bounded<MIN, MAX, DEFAULT, H>
{
    fn parse(value: Value) -> Result<i64, String> {
        let out_of_range =
            |n: &dyn fmt::Display| format!("{n} is out of range; {}", H::hint(MIN, MAX, DEFAULT));
        match whole(&value) {
            Whole::Fits(n) if (MIN..=MAX).contains(&n) => Ok(n),
            Whole::Fits(n) => Err(out_of_range(&n)),
            Whole::TooLarge(n) => Err(out_of_range(&n)),
            Whole::Not => Err(format!("expected a whole number, got {}", got(&value))),
        }
    }
}

impl<'de, const MIN: i64, const MAX: i64, const DEFAULT: i64, H: RangeHint> Deserialize<'de>
    for Bounded<MIN, MAX, DEFAULT, H>
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_given(deserializer, Self::parse).map(|given| Bounded(given, PhantomData))
    }
}

impl<const MIN: i64, const MAX: i64, const DEFAULT: i64, H> JsonSchema
    for Bounded<MIN, MAX, DEFAULT, H>
{
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        format!("Bounded_{MIN}_{MAX}_{DEFAULT}").into()
    }
    fn json_schema(_generator: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "integer",
            "minimum": MIN,
            "maximum": MAX,
            "default": DEFAULT,
        })
    }
}

impl<const MIN: i64, const MAX: i64, const DEFAULT: i64, H: RangeHint> Field
    for Bounded<MIN, MAX, DEFAULT, H>
{
    type Out = i64;
    const REQUIRED: bool = false;
    fn take(self, field: &str, _about: &str) -> Result<i64, String> {
        match self.0 {
            Given::Valid(n) => Ok(n),
            Given::Invalid(problem) => Err(format!("{field}: {problem}")),
            Given::Absent => Ok(DEFAULT),
        }
    }
}

enum Whole {
    Fits(i64),
    /// A whole number beyond `i64`, as the caller wrote it.
    TooLarge(serde_json::Number),
    Not,
}

/// A JSON number that is whole (`5` or `5.0`), within `i64` or not.
fn whole(value: &Value) -> Whole {
    let Value::Number(n) = value else {
        return Whole::Not;
    };
    if let Some(i) = n.as_i64() {
        return Whole::Fits(i);
    }
    if n.as_u64().is_some() {
        return Whole::TooLarge(n.clone());
    }
    match n.as_f64() {
        // 2^63 is exactly representable; every whole f64 below it in magnitude fits.
        Some(f) if f.fract() == 0.0 && f.abs() < 9_223_372_036_854_775_808.0 => {
            Whole::Fits(f as i64)
        }
        Some(f) if f.fract() == 0.0 => Whole::TooLarge(n.clone()),
        _ => Whole::Not,
    }
}

/// A wrong value in a message: a number as written (short), anything else by its kind.
fn got(value: &Value) -> String {
    match value {
        Value::Number(n) => openfactory_core::rules::truncate(&n.to_string(), 30),
        other => kind(other).to_owned(),
    }
}

/// A doc comment as the fix in `field: required; …`: one line, starting lower case.
fn hint(about: &str) -> String {
    let line = about.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut chars = line.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => "see the tool's input schema".to_owned(),
    }
}

/// A doc comment as a schema `description`, as schemars' derive writes it: one leading space
/// dropped from each line.
pub fn description(doc: &str) -> String {
    doc.lines()
        .map(|line| line.strip_prefix(' ').unwrap_or(line))
        .collect::<Vec<_>>()
        .join("\n")
}

/// An arguments struct declared with [`tool_args!`].
pub trait ToolArgs {
    /// The arguments, checked.
    type Valid;
    /// The fields, in order.
    const FIELDS: &'static [&'static str];
    /// Every field checked: the checked arguments, or every problem, one line each, each
    /// naming its field.
    fn validate(self) -> Result<Self::Valid, String>;
}

/// The object schema [`tool_args!`] builds, one property at a time.
#[derive(Default)]
pub struct ObjectSchema {
    properties: Map<String, Value>,
    required: Vec<Value>,
}

impl ObjectSchema {
    pub fn field<F: Field>(&mut self, generator: &mut SchemaGenerator, name: &str, doc: &str) {
        let mut schema = generator.subschema_for::<F>();
        schema.insert("description".into(), description(doc).into());
        self.properties.insert(name.into(), schema.to_value());
        if F::REQUIRED {
            self.required.push(name.into());
        }
    }

    pub fn into_schema(self) -> Schema {
        let mut object = Map::new();
        object.insert("type".into(), "object".into());
        object.insert("properties".into(), Value::Object(self.properties));
        if !self.required.is_empty() {
            object.insert("required".into(), Value::Array(self.required));
        }
        Schema::from(object)
    }
}

/// Collects each field's result for [`ToolArgs::validate`].
#[derive(Default)]
pub struct Problems(Vec<String>);

impl Problems {
    pub fn check<T>(&mut self, result: Result<T, String>) -> Option<T> {
        match result {
            Ok(t) => Some(t),
            Err(problem) => {
                self.0.push(problem);
                None
            }
        }
    }

    pub fn into_result(self) -> Result<(), String> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0.join("\n"))
        }
    }
}

/// Declares a tool's arguments: `pub struct RawArgs => Checked { /// doc
/// field: Wrapper<T>, … }`. Every field needs a doc comment: it is the property's
/// description in the schema, and the fix in a `required` error.
macro_rules! tool_args {
    ($(
        $(#[doc = $sdoc:literal])*
        pub struct $name:ident => $valid:ident {
            $( $(#[doc = $doc:literal])+ $field:ident : $ty:ty ),* $(,)?
        }
    )*) => {$(
        $(#[doc = $sdoc])*
        #[derive(Debug, serde::Deserialize)]
        pub struct $name {
            $( $(#[doc = $doc])+ pub $field: $ty, )*
        }

        #[doc = concat!("[`", stringify!($name), "`], checked.")]
        #[derive(Debug)]
        pub struct $valid {
            $( pub $field: <$ty as $crate::tools::args::Field>::Out, )*
        }

        impl $crate::tools::args::ToolArgs for $name {
            type Valid = $valid;
            const FIELDS: &'static [&'static str] = &[$(stringify!($field)),*];
            fn validate(self) -> Result<$valid, String> {
                let mut problems = $crate::tools::args::Problems::default();
                $(
                    let $field = problems.check($crate::tools::args::Field::take(
                        self.$field,
                        stringify!($field),
                        concat!($($doc, "\n"),+),
                    ));
                )*
                problems.into_result()?;
                Ok($valid {
                    $( $field: $field.expect("checked above"), )*
                })
            }
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
                #[allow(unused_mut)]
                let mut object = $crate::tools::args::ObjectSchema::default();
                $(
                    object.field::<$ty>(
                        generator,
                        stringify!($field),
                        concat!($($doc, "\n"),+),
                    );
                )*
                object.into_schema()
            }
        }
    )*};
}
pub(crate) use tool_args;
