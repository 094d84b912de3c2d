//! Reading incoming JSON-RPC, for every transport: garbage gets a JSON-RPC
//! error in this server's words (what is wrong, where, and what to send
//! instead), never a crash and never a deserializer's message.
//!
//! [`parse`] checks a message's shape itself before handing it to rmcp's
//! types, so that the common mistakes (not UTF-8, not JSON, a batch, a
//! wrong `jsonrpc`, an `id` that is an object, `params` that are not an
//! object, a known method's missing parameter) are each named by field.

use rmcp::model::{ClientJsonRpcMessage, ClientRequest, JsonRpcMessage};
use serde_json::{Map, Value, json};

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const INVALID_PARAMS: i64 = -32602;
/// Too many requests (a server error, in the range JSON-RPC leaves to
/// implementations; 429 is its HTTP status).
pub const RATE_LIMITED: i64 = -32029;

/// The id of the request in `body`, if it is one JSON-RPC request (null for
/// a notification, a batch, or anything that is not JSON).
pub fn request_id(body: &[u8]) -> Value {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("id").cloned())
        .filter(valid_id)
        .unwrap_or(Value::Null)
}

pub fn error(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// A client message, or the JSON-RPC error to answer with.
pub fn parse(bytes: &[u8]) -> Result<ClientJsonRpcMessage, Value> {
    let value = json_value(bytes).map_err(|why| error(Value::Null, PARSE_ERROR, &why))?;
    let id = value
        .get("id")
        .filter(|id| valid_id(id))
        .cloned()
        .unwrap_or(Value::Null);
    let invalid = |why: String| {
        error(
            id.clone(),
            INVALID_REQUEST,
            &format!("invalid request: {why}"),
        )
    };
    // What to say if rmcp's types still refuse a message of the right shape.
    let otherwise = match shape(&value).map_err(invalid)? {
        Kind::Call(method) => format!(
            "the `params` of `{method}` are not what MCP's `{method}` takes; see its definition in the MCP specification"
        ),
        Kind::Answer => "`result` is not an answer to any request this server sends (ping, sampling, roots, elicitation)".to_owned(),
    };
    let message = serde_json::from_value(value).map_err(|_| invalid(otherwise.clone()))?;
    // rmcp reads a standard method whose params do not fit as a custom
    // request, which would be answered "method not found": say what it is.
    if let JsonRpcMessage::Request(request) = &message
        && let ClientRequest::CustomRequest(custom) = &request.request
        && STANDARD_METHODS.contains(&custom.method.as_str())
    {
        return Err(error(
            id,
            INVALID_PARAMS,
            &format!("invalid params: {otherwise}"),
        ));
    }
    Ok(message)
}

/// The requests MCP defines (a request with another method is a custom one).
const STANDARD_METHODS: &[&str] = {
    use rmcp::model::*;
    &[
        PingRequestMethod::VALUE,
        InitializeResultMethod::VALUE,
        DiscoverRequestMethod::VALUE,
        CompleteRequestMethod::VALUE,
        SetLevelRequestMethod::VALUE,
        GetPromptRequestMethod::VALUE,
        ListPromptsRequestMethod::VALUE,
        ListResourcesRequestMethod::VALUE,
        ListResourceTemplatesRequestMethod::VALUE,
        ReadResourceRequestMethod::VALUE,
        SubscriptionsListenRequestMethod::VALUE,
        SubscribeRequestMethod::VALUE,
        UnsubscribeRequestMethod::VALUE,
        CallToolRequestMethod::VALUE,
        ListToolsRequestMethod::VALUE,
        GetTaskMethod::VALUE,
        UpdateTaskMethod::VALUE,
        CancelTaskMethod::VALUE,
        ListSkillsRequestMethod::VALUE,
        GetSkillRequestMethod::VALUE,
        ReadResourceDirectoryRequestMethod::VALUE,
    ]
};

/// The message as a JSON value, or why it is not one.
fn json_value(bytes: &[u8]) -> Result<Value, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        format!(
            "parse error: the message is not UTF-8 (byte {} is not); send JSON text in UTF-8",
            e.valid_up_to()
        )
    })?;
    serde_json::from_str(text).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Eof => "the message ends before its JSON does",
            // Numbers out of range, keys that are not strings, lone surrogates…
            serde_json::error::Category::Data | serde_json::error::Category::Syntax => {
                "this is not valid JSON"
            }
            serde_json::error::Category::Io => "the message could not be read",
        };
        format!(
            "parse error: not JSON at line {}, column {}: {what}; send one JSON-RPC 2.0 object",
            e.line(),
            e.column()
        )
    })
}

fn valid_id(id: &Value) -> bool {
    id.is_string() || id.is_i64() || id.is_u64()
}

/// What a well-shaped message is.
enum Kind<'a> {
    /// A request or a notification, by method.
    Call(&'a str),
    /// A response (or an error response) to one of the server's requests.
    Answer,
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The checks JSON-RPC 2.0 and MCP make of every message, each naming its
/// field.
fn shape(value: &Value) -> Result<Kind<'_>, String> {
    let object = match value {
        Value::Object(object) => object,
        Value::Array(_) => {
            return Err(
                "a batch (a JSON array) is not accepted; send each message on its own".to_owned(),
            );
        }
        other => {
            return Err(format!(
                "a message is a JSON object, not {}; send {{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": …}}",
                kind_of(other)
            ));
        }
    };
    match object.get("jsonrpc") {
        Some(Value::String(v)) if v == "2.0" => {}
        None => return Err("field `jsonrpc` is missing; add \"jsonrpc\": \"2.0\"".to_owned()),
        Some(_) => return Err("field `jsonrpc` must be the string \"2.0\"".to_owned()),
    }
    if let Some(id) = object.get("id")
        && !valid_id(id)
    {
        return Err(format!(
            "field `id` must be a string or an integer, not {}",
            match id {
                Value::Number(_) => "a fraction or a number out of range",
                other => kind_of(other),
            }
        ));
    }
    match (object.get("method"), object.get("result"), object.get("error")) {
        (Some(Value::String(method)), None, None) => {
            check_params(method, object)?;
            Ok(Kind::Call(method))
        }
        (Some(Value::String(_)), _, _) => {
            Err("a message has either `method` (a request or notification) or `result`/`error` (a response), not both".to_owned())
        }
        (Some(other), _, _) => Err(format!("field `method` must be a string, not {}", kind_of(other))),
        (None, Some(_), Some(_)) => Err("a response has `result` or `error`, not both".to_owned()),
        (None, result, error) if result.is_some() || error.is_some() => {
            if !object.contains_key("id") {
                return Err("field `id` is missing: a response answers the request with that id".to_owned());
            }
            if let Some(error) = error {
                check_error(error)?;
            }
            Ok(Kind::Answer)
        }
        (None, _, _) => Err(
            "field `method` is missing: a request or notification names its method (and a response has `result` or `error`)".to_owned(),
        ),
    }
}

fn check_error(error: &Value) -> Result<(), String> {
    let Value::Object(error) = error else {
        return Err(format!(
            "field `error` must be an object, not {}",
            kind_of(error)
        ));
    };
    if !error.get("code").is_some_and(|c| c.is_i64()) {
        return Err("field `error.code` must be an integer".to_owned());
    }
    if !error.get("message").is_some_and(Value::is_string) {
        return Err("field `error.message` must be a string".to_owned());
    }
    Ok(())
}

/// `params` is an object (MCP never uses positional parameters), with the
/// fields the most used methods require.
fn check_params(method: &str, object: &Map<String, Value>) -> Result<(), String> {
    let params = match object.get("params") {
        None | Some(Value::Null) => None,
        Some(Value::Object(params)) => Some(params),
        Some(other) => {
            return Err(format!(
                "field `params` must be an object, not {}",
                kind_of(other)
            ));
        }
    };
    let required: &[(&str, fn(&Value) -> bool, &str)] = match method {
        "initialize" => &[
            (
                "protocolVersion",
                Value::is_string,
                "a string such as \"2025-11-25\"",
            ),
            (
                "capabilities",
                Value::is_object,
                "an object (it may be empty)",
            ),
            (
                "clientInfo",
                Value::is_object,
                "an object with `name` and `version`",
            ),
        ],
        "tools/call" | "prompts/get" => &[("name", Value::is_string, "a string")],
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
            &[("uri", Value::is_string, "a string")]
        }
        _ => &[],
    };
    for (field, ok, what) in required {
        match params.and_then(|p| p.get(*field)) {
            Some(value) if ok(value) => {}
            Some(_) => {
                return Err(format!(
                    "field `params.{field}` of `{method}` must be {what}"
                ));
            }
            None => {
                return Err(format!(
                    "field `params.{field}` is missing; `{method}` needs it ({what})"
                ));
            }
        }
    }
    if matches!(method, "tools/call" | "prompts/get")
        && let Some(arguments) = params.and_then(|p| p.get("arguments"))
        && !arguments.is_object()
    {
        return Err(format!(
            "field `params.arguments` of `{method}` must be an object, not {}",
            kind_of(arguments)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(body: &[u8]) -> (i64, String) {
        let e = parse(body).expect_err("accepted");
        (
            e["error"]["code"].as_i64().unwrap(),
            e["error"]["message"].as_str().unwrap().to_owned(),
        )
    }

    #[test]
    fn garbage_gets_the_right_codes() {
        assert_eq!(refused(b"{not json").0, PARSE_ERROR);
        let e = parse(br#"{"jsonrpc":"2.0","id":7,"bogus":true}"#).unwrap_err();
        assert_eq!(e["error"]["code"], INVALID_REQUEST);
        assert_eq!(e["id"], 7);
        assert!(parse(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#).is_ok());
        assert!(parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).is_ok());
        assert!(parse(br#"{"jsonrpc":"2.0","id":"s-1","result":{}}"#).is_ok());
        assert!(parse(br#"{"jsonrpc":"2.0","id":3,"error":{"code":-1,"message":"no"}}"#).is_ok());
    }

    #[test]
    fn each_mistake_is_named_by_its_field_in_the_servers_words() {
        let cases: &[(&[u8], i64, &str)] = &[
            (b"\xff\xfe{}", PARSE_ERROR, "not UTF-8"),
            (b"{\"jsonrpc\":", PARSE_ERROR, "ends before its JSON"),
            (b"{\"a\":1} x", PARSE_ERROR, "line 1, column 9"),
            (b"[1,2]", INVALID_REQUEST, "batch"),
            (b"17", INVALID_REQUEST, "not a number"),
            (br#"{"id":1,"method":"ping"}"#, INVALID_REQUEST, "`jsonrpc` is missing"),
            (br#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#, INVALID_REQUEST, "`jsonrpc` must be"),
            (br#"{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}"#, INVALID_REQUEST, "`id` must be a string or an integer, not an object"),
            (br#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#, INVALID_REQUEST, "not a fraction"),
            (br#"{"jsonrpc":"2.0","id":1,"method":7}"#, INVALID_REQUEST, "`method` must be a string, not a number"),
            (br#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":"x"}"#, INVALID_REQUEST, "`params` must be an object, not a string"),
            (br#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#, INVALID_REQUEST, "`params.protocolVersion` is missing"),
            (br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":3}}"#, INVALID_REQUEST, "`params.name` of `tools/call` must be a string"),
            (br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":[]}}"#, INVALID_REQUEST, "`params.arguments` of `tools/call` must be an object"),
            (br#"{"jsonrpc":"2.0","id":1,"method":"ping","result":{}}"#, INVALID_REQUEST, "not both"),
            (br#"{"jsonrpc":"2.0","result":{}}"#, INVALID_REQUEST, "`id` is missing"),
            (br#"{"jsonrpc":"2.0","id":1,"error":{"code":"x"}}"#, INVALID_REQUEST, "`error.code`"),
            (br#"{"jsonrpc":"2.0","id":1}"#, INVALID_REQUEST, "`method` is missing"),
            (br#"{"jsonrpc":"2.0","id":1,"method":"logging/setLevel","params":{"level":"loud"}}"#, INVALID_PARAMS, "the `params` of `logging/setLevel` are not what MCP"),
            (br#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{}}"#, INVALID_PARAMS, "the `params` of `completion/complete`"),
        ];
        for (body, code, says) in cases {
            let (got, message) = refused(body);
            let shown = String::from_utf8_lossy(body);
            assert_eq!(got, *code, "{shown}: {message}");
            assert!(
                message.contains(says),
                "{shown}: {message:?} does not say {says:?}"
            );
        }
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
            br#"{"id":1.5}"#,
            br#"{"method":"notifications/initialized"}"#,
            b"",
        ] {
            assert_eq!(request_id(body), Value::Null);
        }
    }
}
