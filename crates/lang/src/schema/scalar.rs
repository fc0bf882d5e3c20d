//! The scalars the loader reads leniently: flags (a boolean or `"true"`/`"false"`), text (a string, or a number or boolean taken as
//! written: `name: 1`, `command: [sleep, 5]`) and numbers (a number, or a string holding one:
//! `timeout_sec: "30"`). Does not say whether text is a template nor give a number's range
//! (each field does).

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

/// A string; a number or boolean is read as its text. Schema-only: never constructed.
pub(crate) struct Text;

impl JsonSchema for Text {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Text".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": ["string", "number", "boolean"] })
    }
}

/// A number, or a string holding one. Schema-only: never constructed.
pub(crate) struct Number;

impl JsonSchema for Number {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Number".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": ["number", "string"],
            "pattern": r"^\s*[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\s*$"
        })
    }
}

/// A boolean, or the string `"true"` or `"false"`. Schema-only: never constructed.
pub(crate) struct Flag;

impl JsonSchema for Flag {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Flag".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "enum": [true, false, "true", "false"] })
    }
}
