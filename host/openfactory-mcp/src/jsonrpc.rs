//! Parsing incoming JSON-RPC for the transports this crate implements
//! itself (legacy SSE, stdio): garbage gets a JSON-RPC error, never a crash.

use rmcp::model::ClientJsonRpcMessage;
use serde_json::{Value, json};

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;

pub fn error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// A client message, or the JSON-RPC error to answer with.
pub fn parse(bytes: &[u8]) -> Result<ClientJsonRpcMessage, Value> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        error(
            Value::Null,
            PARSE_ERROR,
            &format!("parse error: not JSON ({e})"),
        )
    })?;
    let id = value.get("id").cloned().unwrap_or(Value::Null);
    serde_json::from_value(value).map_err(|e| {
        error(
            id,
            INVALID_REQUEST,
            &format!("invalid request: not a JSON-RPC 2.0 message this server accepts ({e})"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_gets_the_right_codes() {
        assert_eq!(
            parse(b"{not json").unwrap_err()["error"]["code"],
            PARSE_ERROR
        );
        let e = parse(br#"{"jsonrpc":"2.0","id":7,"bogus":true}"#).unwrap_err();
        assert_eq!(e["error"]["code"], INVALID_REQUEST);
        assert_eq!(e["id"], 7);
        assert!(parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#).is_ok());
    }
}
