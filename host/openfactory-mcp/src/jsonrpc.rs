//! Parsing incoming JSON-RPC for the transports this crate implements
//! itself (legacy SSE, stdio): garbage gets a JSON-RPC error, never a crash.

use rmcp::model::ClientJsonRpcMessage;
use serde_json::{Value, json};

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
/// Too many requests (a server error, in the range JSON-RPC leaves to
/// implementations; 429 is its HTTP status).
pub const RATE_LIMITED: i64 = -32029;

/// The id of the request in `body`, if it is one JSON-RPC request (null for
/// a notification, a batch, or anything that is not JSON).
pub fn request_id(body: &[u8]) -> Value {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("id").cloned())
        .filter(|id| id.is_string() || id.is_number())
        .unwrap_or(Value::Null)
}

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

    #[test]
    fn a_request_id_is_found_where_there_is_one() {
        assert_eq!(
            request_id(br#"{"jsonrpc":"2.0","id":"a1","method":"ping"}"#),
            json!("a1")
        );
        assert_eq!(
            request_id(br#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#),
            json!(7)
        );
        for body in [
            &b"{not json"[..],
            br#"[{"id":1}]"#,
            br#"{"id":{"x":1}}"#,
            br#"{"method":"notifications/initialized"}"#,
            b"",
        ] {
            assert_eq!(request_id(body), Value::Null);
        }
    }
}
