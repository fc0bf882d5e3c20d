//! The scalar the loader reads as text: a string, or a number or boolean taken as written
//! (`name: 1`, `command: [sleep, 5]`). Does not say whether the text is a template (each
//! field's description does).

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

/// A string; a number or boolean is read as its text. Schema-only: never constructed.
pub struct Text;

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
