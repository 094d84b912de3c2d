//! Hand-written JSON Schemas for answer and argument fields that hold JSON
//! as given (checked elsewhere, with better messages than a schema gives).
//! Each is a real schema, never a bare `true`: some MCP clients refuse a tool
//! list that has one.

use schemars::{Schema, SchemaGenerator, json_schema};

/// Any JSON object.
pub fn object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "object" })
}

/// Features as a recipe lists them: a name, or `{ "name": …, "options": {…} }`.
pub fn features(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "items": {
            "anyOf": [
                { "type": "string", "description": "A feature's name, e.g. `ssh`." },
                {
                    "type": "object",
                    "properties": {
                        "name": { "type": "string" },
                        "options": { "type": "object" }
                    },
                    "required": ["name"]
                }
            ]
        }
    })
}
