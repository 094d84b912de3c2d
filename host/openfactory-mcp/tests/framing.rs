//! Property tests of JSON-RPC framing (proptest): whatever bytes arrive, on
//! stdio (newline-delimited, in any chunks) or as a posted message (legacy
//! SSE, Streamable HTTP), nothing panics, every line gets its answer, and a
//! refusal is a JSON-RPC error in the server's words. Each property prints
//! how many cases it ran.

use bytes::BytesMut;
use openfactory_mcp::jsonrpc::{self, INVALID_REQUEST, PARSE_ERROR};
use openfactory_mcp::stdio::{Frame, Input, Lines, read};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};
use tokio_util::codec::Decoder;

const CASES: u32 = 1024;
/// A small limit, so that long lines are common.
const MAX: usize = 24;

/// What serde and serde_json say; none of it may reach a client.
const DESERIALIZER_WORDS: [&str; 9] = [
    "invalid type",
    "missing field",
    "unknown variant",
    "unknown field",
    "expected value",
    "EOF while parsing",
    "trailing characters",
    "invalid length",
    "data did not match",
];

/// The reference: split at every newline; a last line without one counts.
fn expected(input: &[u8], max: usize) -> Vec<Frame> {
    let mut pieces: Vec<&[u8]> = input.split(|b| *b == b'\n').collect();
    if pieces.last().is_some_and(|p| p.is_empty()) {
        pieces.pop();
    }
    pieces
        .into_iter()
        .map(|piece| {
            if piece.len() > max {
                Frame::TooLong
            } else {
                let piece = piece.strip_suffix(b"\r").unwrap_or(piece);
                Frame::Line(bytes::Bytes::copy_from_slice(piece))
            }
        })
        .collect()
}

/// Feeds `input` to the framer in chunks of the given sizes, then ends it.
fn framed(input: &[u8], chunks: &[usize], max: usize) -> Vec<Frame> {
    let mut lines = Lines::new(max);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut rest = input;
    let mut sizes = chunks.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap()).clamp(1, rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        while let Some(frame) = lines.decode(&mut buf).unwrap() {
            frames.push(frame);
        }
    }
    while let Some(frame) = lines.decode_eof(&mut buf).unwrap() {
        frames.push(frame);
    }
    frames
}

fn bytes_with_newlines() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            3 => Just(b'\n'),
            1 => Just(b'\r'),
            2 => Just(b'{'),
            8 => any::<u8>(),
        ],
        0..200,
    )
}

fn run<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&strategy, test)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    println!("{name}: {CASES} cases");
}

/// A refusal: a JSON-RPC 2.0 error with one of the two codes, in the
/// server's words, short.
fn check_refusal(error: &Value) -> Result<(), TestCaseError> {
    prop_assert_eq!(&error["jsonrpc"], "2.0");
    let code = error["error"]["code"].as_i64().unwrap_or_default();
    prop_assert!(
        code == PARSE_ERROR || code == INVALID_REQUEST,
        "code {}",
        code
    );
    let message = error["error"]["message"].as_str().unwrap_or_default();
    prop_assert!(!message.is_empty() && message.len() < 300, "{:?}", message);
    for words in DESERIALIZER_WORDS {
        prop_assert!(!message.contains(words), "{:?} says {:?}", message, words);
    }
    Ok(())
}

#[test]
fn stdio_framing_agrees_with_splitting_at_newlines_in_any_chunks() {
    run(
        "stdio framing",
        (
            bytes_with_newlines(),
            prop::collection::vec(1usize..40, 1..8),
        ),
        |(input, chunks)| {
            prop_assert_eq!(framed(&input, &chunks, MAX), expected(&input, MAX));
            Ok(())
        },
    );
}

#[test]
fn a_line_too_long_is_answered_once_and_the_next_line_is_read() {
    let mut input = vec![b'x'; 10 * MAX];
    input.extend_from_slice(b"\n{\"jsonrpc\":\"2.0\",\"id\":1}\n");
    let frames = framed(&input, &[7], MAX);
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_eq!(frames[0], Frame::TooLong);
    let Input::Refused(error) = read(&frames[0]) else {
        panic!("a long line is not refused")
    };
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("too large")
    );
    assert!(matches!(read(&frames[1]), Input::Refused(_)));
}

#[test]
fn every_line_of_stdio_gets_a_message_or_an_answer() {
    run(
        "stdio lines",
        (
            bytes_with_newlines(),
            prop::collection::vec(1usize..40, 1..8),
        ),
        |(input, chunks)| {
            for frame in framed(&input, &chunks, MAX) {
                match read(&frame) {
                    Input::Message(_) => {}
                    Input::Blank => {
                        let Frame::Line(line) = &frame else {
                            return Err(TestCaseError::fail("a long line taken for a blank one"));
                        };
                        prop_assert!(line.iter().all(u8::is_ascii_whitespace));
                    }
                    Input::Refused(error) => check_refusal(&error)?,
                }
            }
            Ok(())
        },
    );
}

#[test]
fn any_bytes_posted_are_a_message_or_a_json_rpc_error() {
    run(
        "posted bytes",
        prop::collection::vec(any::<u8>(), 0..300),
        |body| {
            if let Err(error) = jsonrpc::parse(&body) {
                check_refusal(&error)?;
            }
            Ok(())
        },
    );
}

/// JSON values shaped like JSON-RPC messages, mostly wrong.
fn message_like() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        "[a-z/_]{0,12}".prop_map(Value::from),
        Just(json!("2.0")),
        Just(json!("initialize")),
        Just(json!("tools/call")),
        Just(json!("resources/read")),
    ];
    let value = leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-zA-Z]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    let field = prop::option::weighted(0.7, value.clone());
    (
        field.clone(),
        field.clone(),
        field.clone(),
        field.clone(),
        field.clone(),
        field,
    )
        .prop_map(|(jsonrpc, id, method, params, result, error)| {
            let mut message = serde_json::Map::new();
            for (name, v) in [
                ("jsonrpc", jsonrpc),
                ("id", id),
                ("method", method),
                ("params", params),
                ("result", result),
                ("error", error),
            ] {
                if let Some(v) = v {
                    message.insert(name.to_owned(), v);
                }
            }
            Value::Object(message)
        })
}

#[test]
fn messages_of_every_shape_are_accepted_or_refused_by_field() {
    run("message shapes", message_like(), |message| {
        let body = serde_json::to_vec(&message).unwrap();
        match jsonrpc::parse(&body) {
            Ok(_) => {
                prop_assert_eq!(&message["jsonrpc"], "2.0");
            }
            Err(error) => {
                check_refusal(&error)?;
                prop_assert_eq!(error["error"]["code"].as_i64(), Some(INVALID_REQUEST));
                // The request's id is answered when it is one.
                let id = &message["id"];
                if id.is_string() || id.is_i64() || id.is_u64() {
                    prop_assert_eq!(&error["id"], id);
                } else {
                    prop_assert_eq!(&error["id"], &Value::Null);
                }
                let said = error["error"]["message"].as_str().unwrap();
                prop_assert!(said.contains('`'), "names no field: {:?}", said);
            }
        }
        Ok(())
    });
}

#[test]
fn deep_nesting_is_refused_without_a_crash() {
    for depth in [200, 10_000, 100_000] {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"x","arguments":{{"a":{}{}}}}}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        match jsonrpc::parse(body.as_bytes()) {
            Ok(_) => assert!(depth <= 128, "nesting {depth} deep accepted"),
            Err(error) => assert_eq!(error["error"]["code"], PARSE_ERROR, "{error}"),
        }
    }
}
