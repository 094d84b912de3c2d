//! Budgets for the work the host does on a schema's behalf.
//!
//! A plugin's options schema is compiled and evaluated by the host, outside
//! the sandbox, so nothing there stops a hostile one: a few KB of `allOf` that
//! doubles through `$ref` took 12.5 s to check at depth 28. Two kinds of bound
//! keep that work small:
//!
//! - **At load** ([`Graph::of`]), on the document alone: its serialized size
//!   and nesting, only local references, a bounded number of regular
//!   expressions, no reference loop that stays on the same value, and how
//!   large it gets once every `$ref`, `allOf`, `anyOf`, … is expanded. A
//!   refusal there refuses the bundle, with a message the author can act on.
//! - **At each check** ([`Graph::cost`]), on the work for one instance: a walk
//!   of the instance alongside the schema counts how many times each schema
//!   node would be applied (recursive schemas are legitimate, and a recursion
//!   that doubles at each level only shows with the instance). Past the budget
//!   the instance is refused without running the validator at all.
//!
//! The walk follows the validator's own structure, node by node, so its count
//! is what the validator would do (within a small factor); it is conservative
//! where the schema alone cannot tell (a `patternProperties` entry is assumed
//! to match every key, `additionalProperties` every key not in `properties`).

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};

/// Largest schema document, serialized. First-party schemas are 1–3 KB and
/// the recipe's own about 6 KB; 256 KiB also bounds the validator's compile
/// time (linear in the document) to milliseconds.
pub const MAX_SCHEMA_BYTES: usize = 256 * 1024;

/// Deepest JSON nesting of a schema document. schemars writes every struct
/// and enum into `$defs`, so its output nests a handful of levels; 32 leaves
/// ample room for hand-written schemas and keeps every walk of the document
/// (ours, serde's, the validator's compiler) far from the stack's limit.
pub const MAX_SCHEMA_DEPTH: usize = 32;

/// Most schema nodes a full expansion may visit: each node counts once per
/// path from the root by which it is applied (through `$ref`, `allOf`,
/// `anyOf`, `oneOf`, `properties`, …), and a node with a list (`enum`,
/// `required`, `properties`) counts once more per entry. A recursion counts
/// its node once: the instance, not the schema, decides how often it unrolls,
/// and [`MAX_CHECK_STEPS`] bounds that. Ordinary schemas expand to a few
/// hundred nodes at most (the recipe's own to about a hundred); a doubling
/// `allOf` chain is refused from depth 15 on.
pub const MAX_EXPANSION: u64 = 100_000;

/// Most regular expressions (`pattern`, `patternProperties` keys) in a schema.
/// Each costs the validator's compiler up to about a millisecond, so this bounds
/// load time; first-party schemas have at most three.
pub const MAX_PATTERNS: usize = 128;

/// Compiled size limit of one regular expression, in bytes (the `regex`
/// engine's `size_limit`). Patterns run on the linear-time `regex` engine
/// (fancy-regex's backtracking would make a match's cost unbounded), whose
/// worst case (a pattern whose lazy DFA thrashes, such as
/// `^(a|b)*a(a|b){100}$`, near this limit) grows with the pattern's size
/// times the string's length: about 3 µs per byte, measured, which
/// [`STEPS_PER_MATCHED_BYTE`] charges for. Ordinary patterns (`^[\w.-]{1,64}$`)
/// are far below it.
pub const MAX_PATTERN_SIZE: usize = 32 * 1024;

/// Most steps one check may take, a step being one application of one
/// schema node to one value: 20–70 ns of the validator's time, measured, so
/// about 0.3 s of validation at worst (a recursion that doubles at each
/// level, or a hostile pattern, at the budget). The largest recipe (2 MiB of
/// one-letter package names) takes about 1,000,000 steps against the recipe
/// schema; a feature's options a few hundred.
pub const MAX_CHECK_STEPS: u64 = 5_000_000;

/// Checks that cost more than this many steps report only their first
/// problem: the validator collects every error before it returns them, and a
/// schema that fails at millions of nodes would otherwise hold millions of
/// errors in memory (a few hundred bytes each). At this bound, 50,000 errors
/// took 0.1 s to collect and report.
pub const MAX_EXPLAIN_STEPS: u64 = 100_000;

/// Deepest instance nesting at which a schema still applies. The validator
/// recurses once per level; 64 is far beyond any recipe's options (and the
/// recipe parser's own limit on JSON is 128).
pub const MAX_INSTANCE_DEPTH: usize = 64;

/// Steps charged per byte of a string that a node matches against a regular
/// expression or a format, for the worst case of a pattern within
/// [`MAX_PATTERN_SIZE`] (about 3 µs per byte): a 78 KB string under a hostile
/// pattern uses the whole budget (measured 0.2–0.3 s), while a name under a
/// pattern costs a few hundred steps.
const STEPS_PER_MATCHED_BYTE: u64 = 64;

/// A schema reduced to what costs work: which nodes apply where.
#[derive(Debug)]
pub struct Graph {
    nodes: Vec<Node>,
    /// `rank[n]`: position of node `n` in a topological order of the
    /// in-place edges (parents first).
    rank: Vec<usize>,
    /// `order[r]`: the node of rank `r`.
    order: Vec<usize>,
}

/// One schema node (an object or a boolean), by its edges to other nodes.
#[derive(Debug, Default)]
struct Node {
    /// Where it sits in the document, for messages.
    at: String,
    /// Cost of applying it once, in steps.
    weight: u64,
    /// `pattern`, `format`, `contentEncoding`/`contentMediaType`: work grows
    /// with the length of a string it applies to.
    matches_strings: bool,
    /// `uniqueItems: true`: work grows with the array's length.
    unique_items: bool,
    /// Number of `patternProperties`: each key is matched against each.
    key_patterns: u64,
    /// `unevaluatedProperties`/`unevaluatedItems`: the validator evaluates
    /// the node's in-place subschemas once more to learn what they cover, and
    /// looks at each of them for each child.
    unevaluated: bool,
    /// Applied to the same value: `$ref`, `allOf`, `anyOf`, `oneOf`, `not`,
    /// `if`/`then`/`else`, `dependentSchemas`, schema `dependencies`; `true`
    /// for an alternative of `anyOf`/`oneOf`.
    in_place: Vec<(usize, bool)>,
    /// `properties`, sorted by name.
    properties: Vec<(String, usize)>,
    /// `additionalProperties`: keys not in `properties`.
    additional: Option<usize>,
    /// `patternProperties` (assumed to match), `unevaluatedProperties`.
    any_property: Vec<usize>,
    /// `propertyNames`: applied to each key, a string.
    property_names: Option<usize>,
    /// `prefixItems` (or the array form of `items`), by index.
    items: Vec<usize>,
    /// `items`, `additionalItems`, `contains`, `unevaluatedItems`.
    any_item: Vec<usize>,
    /// Every edge above, for the expansion's walk.
    edges: Vec<usize>,
}

impl Node {
    fn descends_objects(&self) -> bool {
        !self.properties.is_empty()
            || self.additional.is_some()
            || !self.any_property.is_empty()
            || self.property_names.is_some()
            || self.key_patterns > 0
    }

    fn descends_arrays(&self) -> bool {
        !self.items.is_empty() || !self.any_item.is_empty()
    }

    /// Steps of looking at one child, once.
    fn per_child(&self) -> u64 {
        if self.unevaluated {
            1 + self.in_place.len() as u64
        } else {
            1
        }
    }
}

/// Why an instance was not checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    /// More than [`MAX_CHECK_STEPS`].
    Steps,
    /// Deeper than [`MAX_INSTANCE_DEPTH`] where the schema still applies.
    Depth,
}

impl Exceeded {
    /// The last part of the diagnostic's code.
    pub fn slug(self) -> &'static str {
        match self {
            Exceeded::Steps => "too-complex",
            Exceeded::Depth => "too-deep",
        }
    }

    /// One sentence for the recipe's author.
    pub fn message(self) -> String {
        match self {
            Exceeded::Steps => format!(
                "too large to check against this schema: checking would take more than \
                 {MAX_CHECK_STEPS} steps, the limit (make the value smaller)"
            ),
            Exceeded::Depth => format!(
                "nested more than {MAX_INSTANCE_DEPTH} levels deep where the schema applies; \
                 the limit is {MAX_INSTANCE_DEPTH}"
            ),
        }
    }
}

impl Graph {
    /// Check a schema document against every load-time bound and reduce it to
    /// its graph; `Err` says which bound, and where, in one sentence.
    pub fn of(document: &Value) -> Result<Graph, String> {
        check_depth(document)?;
        check_size(document)?;
        let mut nodes = Builder::new(document).build()?;
        let (rank, order) = in_place_order(&nodes)?;
        weigh_unevaluated(&mut nodes, &order);
        if expansion(&nodes) > MAX_EXPANSION {
            return Err(format!(
                "the schema expands to more than {MAX_EXPANSION} nodes through \
                 $ref/allOf/anyOf/oneOf (a reference bomb); the limit is {MAX_EXPANSION}"
            ));
        }
        Ok(Graph { nodes, rank, order })
    }

    /// What checking `instance` costs, or which bound it exceeds. Takes at
    /// most a small multiple of the steps it counts (each node is visited once
    /// per value however often it applies), and stops at the budget.
    pub fn cost(&self, instance: &Value) -> Result<Cost, Exceeded> {
        let mut meter = Cost::default();
        let root = Applied {
            node: 0,
            times: 1,
            chosen: false,
        };
        let root = self.closure(vec![root], Site::Value(instance), &mut meter)?;
        let mut stack = vec![self.frame(instance, root, 0)];
        while let Some(frame) = stack.last_mut() {
            let next = match &mut frame.children {
                Children::Object(it) => it.next().map(|(k, v)| (Step::Key(k), v)),
                Children::Array(it) => it.next().map(|(i, v)| (Step::Index(i), v)),
                Children::None => None,
            };
            let Some((step, value)) = next else {
                stack.pop();
                continue;
            };
            let roots = self.child_roots(&frame.closure, step, &mut meter)?;
            if roots.is_empty() {
                continue;
            }
            let depth = frame.depth + 1;
            if depth > MAX_INSTANCE_DEPTH {
                return Err(Exceeded::Depth);
            }
            let closure = self.closure(roots, Site::Value(value), &mut meter)?;
            stack.push(self.frame(value, closure, depth));
        }
        Ok(meter)
    }

    /// Every node applied at one value, with how many times, from the nodes
    /// applied to it directly: follows in-place edges in topological order,
    /// so each node is visited once however often it applies.
    fn closure(
        &self,
        roots: Vec<Applied>,
        site: Site<'_>,
        meter: &mut Cost,
    ) -> Result<Vec<Applied>, Exceeded> {
        if let [root] = roots[..]
            && self.nodes[root.node].in_place.is_empty()
        {
            // The common case (a leaf such as `{"type": "string"}`), without the map.
            meter.charge(root, cost_at(&self.nodes[root.node], site))?;
            return Ok(roots);
        }
        let mut pending: BTreeMap<(usize, bool), u64> = BTreeMap::new();
        for a in roots {
            add(&mut pending, (self.rank[a.node], a.chosen), a.times);
        }
        let mut out = Vec::new();
        while let Some(((rank, chosen), times)) = pending.pop_first() {
            let node = self.order[rank];
            let applied = Applied {
                node,
                times,
                chosen,
            };
            meter.charge(applied, cost_at(&self.nodes[node], site))?;
            for &(m, choice) in &self.nodes[node].in_place {
                add(&mut pending, (self.rank[m], chosen || choice), times);
            }
            out.push(applied);
        }
        Ok(out)
    }

    /// The nodes applied directly to one child of a value (by key or index),
    /// charging the per-child work of the nodes that look at children.
    fn child_roots(
        &self,
        closure: &[Applied],
        step: Step<'_>,
        meter: &mut Cost,
    ) -> Result<Vec<Applied>, Exceeded> {
        let mut roots = Vec::new();
        let mut names = Vec::new();
        for &a in closure {
            let node = &self.nodes[a.node];
            let to = |m: usize| Applied { node: m, ..a };
            match step {
                Step::Key(key) if node.descends_objects() => {
                    let matching = node.key_patterns.saturating_mul(matched(key.len()));
                    meter.charge(a, matching.saturating_add(node.per_child()))?;
                    let named = node
                        .properties
                        .binary_search_by(|(name, _)| name.as_str().cmp(key))
                        .map(|i| node.properties[i].1);
                    match (named, node.additional) {
                        (Ok(m), _) | (Err(_), Some(m)) => roots.push(to(m)),
                        (Err(_), None) => {}
                    }
                    roots.extend(node.any_property.iter().map(|&m| to(m)));
                    names.extend(node.property_names.map(to));
                }
                Step::Index(i) if node.descends_arrays() => {
                    meter.charge(a, node.per_child())?;
                    roots.extend(node.items.get(i).map(|&m| to(m)));
                    roots.extend(node.any_item.iter().map(|&m| to(m)));
                }
                _ => {}
            }
        }
        if let (Step::Key(key), false) = (step, names.is_empty()) {
            self.closure(names, Site::Key(key.len()), meter)?;
        }
        Ok(roots)
    }

    /// A value to walk: its children only if a node applied to it looks at them.
    fn frame<'a>(&self, value: &'a Value, closure: Vec<Applied>, depth: usize) -> Frame<'a> {
        let looks = |f: fn(&Node) -> bool| closure.iter().any(|a| f(&self.nodes[a.node]));
        let children = match value {
            Value::Object(map) if looks(Node::descends_objects) => Children::Object(map.iter()),
            Value::Array(items) if looks(Node::descends_arrays) => {
                Children::Array(items.iter().enumerate())
            }
            _ => Children::None,
        };
        Frame {
            closure,
            children,
            depth,
        }
    }
}

/// What one check costs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cost {
    /// Every step, at most [`MAX_CHECK_STEPS`].
    pub steps: u64,
    /// The steps under an `anyOf`/`oneOf`: when such a choice fails, the
    /// validator keeps the errors of every alternative, so these bound the
    /// errors that even a report of the first problem holds in memory.
    pub chosen: u64,
}

impl Cost {
    /// Charge `steps` for each time `applied` applies.
    fn charge(&mut self, applied: Applied, steps: u64) -> Result<(), Exceeded> {
        let steps = applied.times.saturating_mul(steps);
        self.steps = self.steps.saturating_add(steps);
        if applied.chosen {
            self.chosen = self.chosen.saturating_add(steps);
        }
        if self.steps > MAX_CHECK_STEPS {
            Err(Exceeded::Steps)
        } else {
            Ok(())
        }
    }
}

/// A node applied to one value `times` times, and whether under an
/// `anyOf`/`oneOf`.
#[derive(Debug, Clone, Copy)]
struct Applied {
    node: usize,
    times: u64,
    chosen: bool,
}

/// What a node is applied to: a value, or an object's key (for `propertyNames`).
#[derive(Clone, Copy)]
enum Site<'a> {
    Value(&'a Value),
    Key(usize),
}

/// How a child is reached from its parent value.
#[derive(Clone, Copy)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

/// A value being walked, with the nodes applied to it.
struct Frame<'a> {
    closure: Vec<Applied>,
    children: Children<'a>,
    depth: usize,
}

enum Children<'a> {
    Object(serde_json::map::Iter<'a>),
    Array(std::iter::Enumerate<std::slice::Iter<'a, Value>>),
    None,
}

fn add(pending: &mut BTreeMap<(usize, bool), u64>, key: (usize, bool), times: u64) {
    let slot = pending.entry(key).or_insert(0);
    *slot = slot.saturating_add(times);
}

/// Steps of matching a string of `len` bytes against a pattern.
fn matched(len: usize) -> u64 {
    1 + (len as u64).saturating_mul(STEPS_PER_MATCHED_BYTE)
}

/// Steps of applying `node` once at `site`.
fn cost_at(node: &Node, site: Site<'_>) -> u64 {
    let mut steps = node.weight;
    let len = match site {
        Site::Value(Value::String(s)) => Some(s.len()),
        Site::Key(len) => Some(len),
        Site::Value(_) => None,
    };
    if let (true, Some(len)) = (node.matches_strings, len) {
        steps = steps.saturating_add(matched(len));
    }
    if let (true, Site::Value(Value::Array(items))) = (node.unique_items, site) {
        steps = steps.saturating_add(items.len() as u64);
    }
    steps
}

/// Refuse a document nested deeper than [`MAX_SCHEMA_DEPTH`] (without
/// recursing: the document may be arbitrarily deep).
fn check_depth(document: &Value) -> Result<(), String> {
    let mut stack = vec![(document, 1usize)];
    while let Some((value, depth)) = stack.pop() {
        if depth > MAX_SCHEMA_DEPTH {
            return Err(format!(
                "the schema nests JSON more than {MAX_SCHEMA_DEPTH} levels deep; \
                 the limit is {MAX_SCHEMA_DEPTH} (move shared parts into `$defs`)"
            ));
        }
        match value {
            Value::Object(map) => stack.extend(map.values().map(|c| (c, depth + 1))),
            Value::Array(items) => stack.extend(items.iter().map(|c| (c, depth + 1))),
            _ => {}
        }
    }
    Ok(())
}

/// Refuse a document longer than [`MAX_SCHEMA_BYTES`] once serialized
/// (stops writing at the limit).
fn check_size(document: &Value) -> Result<(), String> {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            if self.0 > MAX_SCHEMA_BYTES {
                return Err(std::io::Error::other("too large"));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    serde_json::to_writer(Counter(0), document).map_err(|_| {
        format!(
            "the schema is more than {MAX_SCHEMA_BYTES} bytes long serialized; \
             the limit is {MAX_SCHEMA_BYTES} bytes"
        )
    })
}

/// Builds the graph from the root, following subschema keywords and local
/// references; refuses what the graph cannot bound.
struct Builder<'a> {
    root: &'a Value,
    /// The keyword that starts a new schema resource (`id` in draft 4).
    id_keyword: &'static str,
    ids: HashMap<*const Value, usize>,
    /// Each node's value and location, by id.
    found: Vec<(&'a Value, String)>,
    patterns: usize,
}

impl<'a> Builder<'a> {
    fn new(root: &'a Value) -> Self {
        let draft4 = root
            .get("$schema")
            .and_then(Value::as_str)
            .is_some_and(|s| s.contains("draft-04") || s.contains("draft-03"));
        Builder {
            root,
            id_keyword: if draft4 { "id" } else { "$id" },
            ids: HashMap::new(),
            found: Vec::new(),
            patterns: 0,
        }
    }

    fn build(mut self) -> Result<Vec<Node>, String> {
        self.id(self.root, String::new());
        let mut nodes = Vec::new();
        while let Some((value, at)) = self.found.get(nodes.len()).cloned() {
            let mut node = self.node(value, &at, nodes.is_empty())?;
            node.at = at;
            nodes.push(node);
        }
        if self.patterns > MAX_PATTERNS {
            return Err(format!(
                "the schema has more than {MAX_PATTERNS} regular expressions \
                 (`pattern`, `patternProperties`); the limit is {MAX_PATTERNS}"
            ));
        }
        Ok(nodes)
    }

    /// The id of the node `value`, found at `at`; new ones join the queue.
    fn id(&mut self, value: &'a Value, at: String) -> usize {
        let next = self.found.len();
        let id = *self.ids.entry(value as *const Value).or_insert(next);
        if id == next {
            self.found.push((value, at));
        }
        id
    }

    /// Each subschema of an array keyword (`allOf`, `prefixItems`, …).
    fn each(&mut self, value: &'a Value, at: &str) -> Vec<usize> {
        let items = value.as_array().map(Vec::as_slice).unwrap_or_default();
        (0..items.len())
            .map(|i| self.id(&items[i], format!("{at}/{i}")))
            .collect()
    }

    /// Each subschema of a map keyword (`properties`, `$defs`, …), by name.
    fn named(&mut self, value: &'a Value, at: &str) -> Vec<(String, usize)> {
        let Some(map) = value.as_object() else {
            return Vec::new();
        };
        map.iter()
            .map(|(k, v)| (k.clone(), self.id(v, format!("{at}/{}", escape(k)))))
            .collect()
    }

    fn node(&mut self, value: &'a Value, at: &str, is_root: bool) -> Result<Node, String> {
        let Value::Object(map) = value else {
            return Ok(Node {
                weight: 1,
                ..Node::default()
            });
        };
        let mut node = Node {
            weight: 1 + list_weight(map),
            ..Node::default()
        };
        for (key, value) in map {
            let here = format!("{at}/{}", escape(key));
            self.keyword(&mut node, key, value, &here, is_root)?;
        }
        node.properties.sort_by(|a, b| a.0.cmp(&b.0));
        node.edges = (node.in_place.iter().map(|(m, _)| m))
            .chain(node.properties.iter().map(|(_, m)| m))
            .chain(node.additional.iter())
            .chain(node.any_property.iter())
            .chain(node.property_names.iter())
            .chain(node.items.iter())
            .chain(node.any_item.iter())
            .copied()
            .collect();
        Ok(node)
    }

    /// Record one keyword of a schema object in `node`. Subschemas that are
    /// never applied (`$defs`, `contentSchema`) join the graph without an
    /// edge, so that their references are checked too, without counting.
    fn keyword(
        &mut self,
        node: &mut Node,
        key: &str,
        value: &'a Value,
        at: &str,
        is_root: bool,
    ) -> Result<(), String> {
        match key {
            "allOf" => {
                let all = self.each(value, at);
                node.in_place.extend(all.into_iter().map(|m| (m, false)));
            }
            "anyOf" | "oneOf" => {
                let alternatives = self.each(value, at);
                node.in_place
                    .extend(alternatives.into_iter().map(|m| (m, true)));
            }
            "not" | "if" | "then" | "else" => {
                node.in_place.push((self.id(value, at.into()), false));
            }
            "dependentSchemas" => {
                let named = self.named(value, at);
                node.in_place
                    .extend(named.into_iter().map(|(_, m)| (m, false)));
            }
            "dependencies" => {
                let schemas = value.as_object().into_iter().flatten();
                for (k, v) in schemas.filter(|(_, v)| v.is_object() || v.is_boolean()) {
                    let m = self.id(v, format!("{at}/{}", escape(k)));
                    node.in_place.push((m, false));
                }
            }
            "$ref" => node.in_place.push((self.reference(value, at)?, false)),
            "$dynamicRef" | "$recursiveRef" => {
                return Err(format!(
                    "`{key}` at {} is not supported; use `$ref` to a JSON pointer (`#/$defs/…`)",
                    shown(at)
                ));
            }
            "properties" => node.properties = self.named(value, at),
            "patternProperties" => {
                let named = self.named(value, at);
                node.key_patterns = named.len() as u64;
                self.patterns += named.len();
                node.any_property.extend(named.into_iter().map(|(_, m)| m));
            }
            "additionalProperties" => node.additional = Some(self.id(value, at.into())),
            "unevaluatedProperties" => {
                node.unevaluated = true;
                node.any_property.push(self.id(value, at.into()));
            }
            "propertyNames" => node.property_names = Some(self.id(value, at.into())),
            "prefixItems" => node.items = self.each(value, at),
            "items" if value.is_array() => node.items = self.each(value, at),
            "items" | "additionalItems" | "contains" => {
                node.any_item.push(self.id(value, at.into()))
            }
            "unevaluatedItems" => {
                node.unevaluated = true;
                node.any_item.push(self.id(value, at.into()));
            }
            "$defs" | "definitions" => {
                self.named(value, at);
            }
            "contentSchema" => {
                self.id(value, at.into());
            }
            "pattern" => {
                node.matches_strings = true;
                self.patterns += 1;
            }
            "format" | "contentEncoding" | "contentMediaType" => node.matches_strings = true,
            "uniqueItems" => node.unique_items = value == &Value::Bool(true),
            _ if key == self.id_keyword && !is_root => {
                return Err(format!(
                    "`{key}` at {} starts a separate schema resource, which is not supported; \
                     remove it (references are JSON pointers into one document)",
                    shown(at)
                ));
            }
            _ => {}
        }
        Ok(())
    }

    /// The node a `$ref` at `at` points to: only JSON pointers into this
    /// document, so that nothing is ever fetched and the graph is complete.
    fn reference(&mut self, value: &'a Value, at: &str) -> Result<usize, String> {
        let Some(text) = value.as_str() else {
            return Err(format!("`$ref` at {} is not a string", shown(at)));
        };
        let Some(fragment) = text.strip_prefix('#') else {
            return Err(format!(
                "`$ref` {} at {} is not local; only references into the schema itself \
                 (`#/$defs/…`) are allowed, and the host fetches nothing",
                shown(text),
                shown(at)
            ));
        };
        if !fragment.is_empty() && !fragment.starts_with('/') {
            return Err(format!(
                "`$ref` {} at {} names an anchor; write it as a JSON pointer (`#/$defs/…`)",
                shown(text),
                shown(at)
            ));
        }
        let target = percent_decode(fragment).and_then(|p| self.root.pointer(&p));
        let Some(target) = target else {
            return Err(format!(
                "`$ref` {} at {} points to nothing in the schema",
                shown(text),
                shown(at)
            ));
        };
        Ok(self.id(target, fragment.to_owned()))
    }
}

/// Steps a node's lists add to each application: `required` and
/// `dependentRequired` names are looked up, `enum` values and a `const`
/// compared, `properties` walked, one entry at a time.
fn list_weight(map: &Map<String, Value>) -> u64 {
    let len = |key: &str| match map.get(key) {
        Some(Value::Array(items)) => items.len() as u64,
        Some(Value::Object(entries)) => entries.len() as u64,
        _ => 0,
    };
    let nested = |key: &str| {
        let entries = map
            .get(key)
            .and_then(Value::as_object)
            .into_iter()
            .flatten();
        entries
            .map(|(_, v)| v.as_array().map_or(0, |a| a.len() as u64))
            .sum::<u64>()
    };
    let constant = map.get("const").map_or(0, json_nodes);
    len("required")
        + len("enum")
        + len("properties")
        + nested("dependentRequired")
        + nested("dependencies")
        + constant
}

/// Number of values in a JSON document (without recursing).
fn json_nodes(value: &Value) -> u64 {
    let mut stack = vec![value];
    let mut count = 0;
    while let Some(v) = stack.pop() {
        count += 1;
        match v {
            Value::Array(items) => stack.extend(items),
            Value::Object(map) => stack.extend(map.values()),
            _ => {}
        }
    }
    count
}

/// A topological order of the in-place edges (parents first), as
/// `(rank, order)`; `Err` if they loop: a schema that applies itself to the
/// same value through `$ref`/`allOf`/… without descending into the value.
fn in_place_order(nodes: &[Node]) -> Result<(Vec<usize>, Vec<usize>), String> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut mark = vec![Mark::New; nodes.len()];
    let mut post = Vec::with_capacity(nodes.len());
    for start in 0..nodes.len() {
        if mark[start] != Mark::New {
            continue;
        }
        mark[start] = Mark::Open;
        let mut stack = vec![(start, 0usize)];
        while let Some((n, next)) = stack.last_mut() {
            let n = *n;
            match nodes[n].in_place.get(*next) {
                Some(&(m, _)) => {
                    *next += 1;
                    match mark[m] {
                        Mark::New => {
                            mark[m] = Mark::Open;
                            stack.push((m, 0));
                        }
                        Mark::Open => {
                            return Err(format!(
                                "the schema at {} applies itself again to the same value through \
                                 $ref/allOf/anyOf/oneOf/not/if, so checking it would never end; \
                                 a recursion must go through `properties`, `items` or the like",
                                shown(&nodes[m].at)
                            ));
                        }
                        Mark::Done => {}
                    }
                }
                None => {
                    mark[n] = Mark::Done;
                    post.push(n);
                    stack.pop();
                }
            }
        }
    }
    let order: Vec<usize> = post.into_iter().rev().collect();
    let mut rank = vec![0; nodes.len()];
    for (r, &n) in order.iter().enumerate() {
        rank[n] = r;
    }
    Ok((rank, order))
}

/// Charge each `unevaluatedProperties`/`unevaluatedItems` node for the
/// second evaluation of its in-place subschemas: its weight grows by their
/// weighted size, children first (`order` is topological, parents first), so
/// nested ones multiply as they do in the validator.
fn weigh_unevaluated(nodes: &mut [Node], order: &[usize]) {
    let mut size = vec![0u64; nodes.len()];
    for &n in order.iter().rev() {
        let below =
            (nodes[n].in_place.iter()).fold(0u64, |sum, &(m, _)| sum.saturating_add(size[m]));
        if nodes[n].unevaluated {
            nodes[n].weight = nodes[n].weight.saturating_add(below);
        }
        size[n] = nodes[n].weight.saturating_add(below);
    }
}

/// The number of nodes a full expansion from the root visits, each node
/// weighted by [`Node::weight`]; memoised, so linear in the graph, and capped
/// just past [`MAX_EXPANSION`]. An edge back into a node being expanded (a
/// recursion) counts that node once.
fn expansion(nodes: &[Node]) -> u64 {
    let cap = MAX_EXPANSION + 1;
    let mut memo: Vec<Option<u64>> = vec![None; nodes.len()];
    let mut open = vec![false; nodes.len()];
    let mut stack = vec![(0usize, 0usize, nodes[0].weight)];
    open[0] = true;
    while let Some((n, next, total)) = stack.last_mut() {
        match nodes[*n].edges.get(*next) {
            Some(&m) => {
                *next += 1;
                if let Some(size) = memo[m] {
                    *total = (*total + size).min(cap);
                } else if open[m] {
                    *total = (*total + nodes[m].weight).min(cap);
                } else {
                    open[m] = true;
                    stack.push((m, 0, nodes[m].weight.min(cap)));
                }
            }
            None => {
                let (n, _, total) = stack.pop().expect("a frame");
                open[n] = false;
                memo[n] = Some(total);
                if let Some((_, _, parent)) = stack.last_mut() {
                    *parent = (*parent + total).min(cap);
                }
            }
        }
    }
    memo[0].unwrap_or(cap)
}

/// `~` and `/` escaped as in a JSON pointer.
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// A fragment's percent-escapes decoded (`%25` → `%`); `None` if invalid.
fn percent_decode(fragment: &str) -> Option<String> {
    let bytes = fragment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = fragment.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Plugin-supplied text in a message: cut, quoted and escaped, so a hostile
/// schema cannot put control characters or pages of text in front of a user.
fn shown(text: &str) -> String {
    if text.is_empty() {
        return "the root".into();
    }
    format!("{:?}", crate::rules::truncate(text, 80))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use schemars::JsonSchema;
    use serde::Deserialize;
    use serde_json::json;

    use super::*;
    use crate::diagnostic::{Diagnostic, Path};
    use crate::schema::Schema;

    /// `d{i}` = `{keyword: [d{i-1}, d{i-1}]}`: a few KB that expand to
    /// 2^depth nodes, applied to property `x`.
    fn doubling(depth: usize, keyword: &str) -> Value {
        let mut defs = Map::new();
        defs.insert("d0".into(), json!({"type": "string", "pattern": "^a+$"}));
        for i in 1..=depth {
            let prev = format!("#/$defs/d{}", i - 1);
            defs.insert(
                format!("d{i}"),
                json!({ keyword: [{"$ref": prev}, {"$ref": prev}] }),
            );
        }
        json!({
            "$defs": defs,
            "type": "object",
            "properties": {"x": {"$ref": format!("#/$defs/d{depth}")}},
        })
    }

    fn timed<T>(label: &str, f: impl FnOnce() -> T) -> (T, Duration) {
        let start = Instant::now();
        let out = f();
        let took = start.elapsed();
        eprintln!("{label}: {took:?}");
        (out, took)
    }

    fn refusal(document: Value) -> String {
        Schema::compile(document).expect_err("the schema is refused")
    }

    fn check(schema: &Schema, instance: &Value) -> Vec<Diagnostic> {
        schema.check(instance, &Path::root().field("options"), "options")
    }

    /// Check `instance`, printing the time of the whole check and of the
    /// budget's walk within it.
    fn measure(label: &str, schema: &Schema, instance: &Value) -> Vec<Diagnostic> {
        let start = Instant::now();
        let steps = schema.graph.cost(instance);
        let walk = start.elapsed();
        let (diags, took) = timed_quietly(|| check(schema, instance));
        let steps = steps.map_or_else(|_| "over the budget of".into(), |c| c.steps.to_string());
        eprintln!("{label}: {steps} steps; check {took:?} (of which the walk {walk:?})");
        diags
    }

    fn timed_quietly<T>(f: impl FnOnce() -> T) -> (T, Duration) {
        let start = Instant::now();
        let out = f();
        (out, start.elapsed())
    }

    #[test]
    fn a_doubling_ref_bomb_is_refused_at_once() {
        for depth in [28, 40] {
            let document = doubling(depth, "allOf");
            let size = document.to_string().len();
            let (result, took) = timed(
                &format!("compile bomb depth {depth} ({size} bytes)"),
                || Schema::compile(document),
            );
            let err = result.expect_err("the bomb is refused");
            assert_eq!(
                err,
                "the schema expands to more than 100000 nodes through $ref/allOf/anyOf/oneOf \
                 (a reference bomb); the limit is 100000"
            );
            assert!(took < Duration::from_secs(2), "{took:?}");
        }
        for keyword in ["anyOf", "oneOf"] {
            assert!(refusal(doubling(28, keyword)).contains("reference bomb"));
        }
    }

    #[test]
    fn a_bomb_through_properties_is_refused_too() {
        let mut defs = Map::new();
        defs.insert("d0".into(), json!({"type": "string"}));
        for i in 1..=30 {
            let prev = format!("#/$defs/d{}", i - 1);
            defs.insert(
                format!("d{i}"),
                json!({"properties": {"a": {"$ref": prev}, "b": {"$ref": prev}}}),
            );
        }
        let document = json!({"$defs": defs, "$ref": "#/$defs/d30"});
        assert!(refusal(document).contains("reference bomb"));
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut document = json!({"type": "string"});
        for _ in 0..20 {
            document = json!({"type": "object", "properties": {"a": document}});
        }
        assert_eq!(
            refusal(document),
            "the schema nests JSON more than 32 levels deep; the limit is 32 \
             (move shared parts into `$defs`)"
        );
        // Deep in data, too, and far deeper than any walk could recurse.
        let mut deep = json!(1);
        for _ in 0..1_000 {
            deep = json!([deep]);
        }
        assert!(refusal(json!({"const": deep})).contains("more than 32 levels"));
        let mut fine = json!({"type": "string"});
        for _ in 0..15 {
            fine = json!({"type": "object", "properties": {"a": fine}});
        }
        Schema::compile(fine).expect("31 levels are within the limit");
    }

    #[test]
    fn a_huge_schema_is_refused() {
        let description = "x".repeat(300 * 1024);
        assert_eq!(
            refusal(json!({"type": "string", "description": description})),
            "the schema is more than 262144 bytes long serialized; the limit is 262144 bytes"
        );
        let properties: Map<String, Value> = (0..20_000)
            .map(|i| (format!("p{i}"), json!({"type": "integer"})))
            .collect();
        assert!(refusal(json!({"properties": properties})).contains("262144 bytes"));
    }

    #[test]
    fn remote_refs_are_refused_and_nothing_is_fetched() {
        for target in [
            "https://example.com/schema.json",
            "http://169.254.169.254/latest/meta-data",
            "file:///etc/passwd",
            "other.json#/$defs/a",
            "/etc/passwd",
        ] {
            let err = refusal(json!({"properties": {"a": {"$ref": target}}}));
            assert!(err.contains("is not local"), "{err}");
            assert!(err.contains("at \"/properties/a/$ref\""), "{err}");
        }
        // The meta-schema is not fetched either.
        let err = refusal(json!({"$schema": "https://example.com/meta", "type": "string"}));
        assert!(err.contains("Unknown meta-schema"), "{err}");
        // Also where nothing refers to it.
        let err = refusal(json!({"$defs": {"unused": {"$ref": "https://example.com/x"}}}));
        assert!(err.contains("is not local"), "{err}");
        let err = refusal(json!({"$ref": "#/$defs/missing"}));
        assert!(err.contains("points to nothing"), "{err}");
        let err = refusal(json!({"$ref": "#node", "$defs": {"n": {"$anchor": "node"}}}));
        assert!(err.contains("names an anchor"), "{err}");
        let err = refusal(json!({"$dynamicRef": "#meta"}));
        assert!(err.contains("`$dynamicRef`"), "{err}");
        let err =
            refusal(json!({"$defs": {"a": {"$id": "https://example.com/a"}}, "$ref": "#/$defs/a"}));
        assert!(err.contains("separate schema resource"), "{err}");
        // Control characters in a plugin's `$ref` come back escaped.
        let err = refusal(json!({"$ref": "\u{1b}[2Jhttps://x"}));
        assert!(!err.contains('\u{1b}'), "{err}");
    }

    #[test]
    fn a_loop_on_the_same_value_is_refused() {
        let err = refusal(json!({
            "$defs": {"a": {"anyOf": [{"type": "string"}, {"$ref": "#/$defs/a"}]}},
            "$ref": "#/$defs/a",
        }));
        assert!(
            err.contains("applies itself again to the same value"),
            "{err}"
        );
        assert!(refusal(json!({"allOf": [{"$ref": "#"}]})).contains("never end"));
    }

    /// A tree: recursion through `properties`/`items` is legitimate.
    fn tree() -> Value {
        json!({
            "$defs": {"node": {
                "type": "object",
                "additionalProperties": false,
                "required": ["name"],
                "properties": {
                    "name": {"type": "string", "maxLength": 8},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
                    "left": {"$ref": "#/$defs/node"},
                    "right": {"$ref": "#/$defs/node"},
                },
            }},
            "$ref": "#/$defs/node",
        })
    }

    #[test]
    fn a_recursive_tree_schema_compiles_and_validates() {
        let schema = Schema::compile(tree()).expect("a tree compiles");
        let good = json!({"name": "a", "children": [
            {"name": "b", "left": {"name": "c", "right": {"name": "d"}}},
            {"name": "e"},
        ]});
        assert!(check(&schema, &good).is_empty());
        let bad = json!({"name": "a", "children": [{"name": "b"}, {"name": "far too long"}]});
        let diags = check(&schema, &bad);
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!(diags[0].path, "options.children[1].name");
        // Every level of a deep (but bounded) tree is checked.
        let mut deep = json!({"name": 7});
        for _ in 0..50 {
            deep = json!({"name": "n", "left": deep});
        }
        let diags = check(&schema, &deep);
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!(diags[0].code, "options.wrong-type");
    }

    #[test]
    fn an_instance_deeper_than_the_limit_is_not_checked() {
        let schema = Schema::compile(tree()).unwrap();
        let mut deep = json!({"name": "leaf"});
        for _ in 0..100 {
            deep = json!({"name": "n", "left": deep});
        }
        let diags = check(&schema, &deep);
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!(diags[0].code, "options.too-deep");
        assert_eq!(diags[0].path, "options");
        // Depth where no schema applies costs nothing and is not refused.
        let open = Schema::compile(json!({"type": "object"})).unwrap();
        assert!(check(&open, &deep).is_empty());
    }

    /// A tree whose every level applies the node twice: within every static
    /// bound (a recursion counts once), exponential in the instance's depth.
    #[test]
    fn a_doubling_recursion_is_stopped_by_the_check_budget() {
        let schema = Schema::compile(json!({
            "$defs": {"n": {
                "type": "object",
                "properties": {"c": {"allOf": [{"$ref": "#/$defs/n"}, {"$ref": "#/$defs/n"}]}},
            }},
            "$ref": "#/$defs/n",
        }))
        .expect("the recursion is within the static bounds");
        let nest = |depth| {
            let mut v = json!({});
            for _ in 0..depth {
                v = json!({ "c": v });
            }
            v
        };
        let (diags, _) = timed("doubling recursion, depth 12", || check(&schema, &nest(12)));
        assert!(diags.is_empty(), "{diags:?}");
        // Today's validator takes minutes at depth 30 (2^30 evaluations).
        let (diags, took) = timed("doubling recursion, depth 30", || check(&schema, &nest(30)));
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!(diags[0].code, "options.too-complex");
        assert!(
            diags[0].message.contains("5000000 steps"),
            "{}",
            diags[0].message
        );
        assert!(took < Duration::from_secs(5), "{took:?}");
    }

    #[test]
    fn unevaluated_keywords_are_charged_for_their_second_pass() {
        let schema = Schema::compile(json!({
            "allOf": [{"properties": {"a": {"type": "integer"}}}],
            "unevaluatedProperties": false,
        }))
        .expect("compiles");
        assert!(check(&schema, &json!({"a": 1})).is_empty());
        assert_eq!(check(&schema, &json!({"b": 1})).len(), 1);
        // Each level evaluates the one below twice: refused like any bomb.
        let mut defs = Map::new();
        defs.insert(
            "u0".into(),
            json!({"properties": {"a": {"type": "integer"}}}),
        );
        for i in 1..=20 {
            let below = format!("#/$defs/u{}", i - 1);
            defs.insert(
                format!("u{i}"),
                json!({"allOf": [{"$ref": below}], "unevaluatedProperties": false}),
            );
        }
        let err = refusal(json!({"$defs": defs, "$ref": "#/$defs/u20"}));
        assert!(err.contains("reference bomb"), "{err}");
    }

    #[test]
    fn patterns_are_bounded() {
        let many: Map<String, Value> = (0..=MAX_PATTERNS)
            .map(|i| (format!("p{i}"), json!({"pattern": format!("^a{{{i}}}$")})))
            .collect();
        let err = refusal(json!({"properties": many}));
        assert!(err.contains("more than 128 regular expressions"), "{err}");
        let err = refusal(json!({"pattern": "^(?=a)a$"}));
        assert!(err.contains("without look-around"), "{err}");
        let err = refusal(json!({"pattern": "^(a|b)*a(a|b){400}$"}));
        assert!(err.contains("at most 32768 bytes"), "{err}");
        Schema::compile(json!({"pattern": r"^[a-z_][a-z0-9_-]{0,31}$"})).unwrap();
        Schema::compile(json!({"pattern": r"^[\w.-]{1,64}$"})).unwrap();
    }

    #[test]
    fn an_expensive_check_reports_its_first_problem_only() {
        let schema = Schema::compile(json!({
            "type": "array",
            "items": {"type": "integer", "minimum": 0},
        }))
        .unwrap();
        let cheap = Value::Array((0..10).map(|_| json!(-1)).collect());
        assert_eq!(check(&schema, &cheap).len(), 10);
        let dear = Value::Array((0..200_000).map(|_| json!(-1)).collect());
        let diags = check(&schema, &dear);
        assert_eq!(diags.len(), 1, "{}", diags.len());
        assert_eq!(diags[0].path, "options[0]");
    }

    // What schemars writes for first-party plugin options (mirrors of the
    // docker, firewall, hardening and hostile plugins, and more shapes).
    #[allow(dead_code)]
    #[derive(Deserialize, JsonSchema)]
    #[serde(rename_all = "snake_case")]
    enum Driver {
        /// Documented variants become a `oneOf` of `const`s.
        Overlay2,
        Vfs,
    }

    #[allow(dead_code)]
    #[derive(Deserialize, JsonSchema)]
    #[serde(rename_all = "snake_case")]
    enum Policy {
        Drop,
        Accept,
    }

    #[allow(dead_code)]
    #[derive(Deserialize, JsonSchema)]
    #[serde(tag = "kind", rename_all = "snake_case")]
    enum Rule {
        Port { port: u16, proto: Option<Policy> },
        Host { name: String },
    }

    #[allow(dead_code)]
    #[derive(Deserialize, JsonSchema)]
    struct Mirror {
        #[schemars(regex(pattern = r"^https://[^\s/]+"))]
        url: String,
        weight: Option<u32>,
    }

    #[allow(dead_code)]
    #[derive(Deserialize, JsonSchema)]
    struct Dir {
        name: String,
        children: Vec<Dir>,
    }

    #[allow(dead_code)]
    #[derive(Default, Deserialize, JsonSchema)]
    #[serde(default, deny_unknown_fields)]
    struct Options {
        compose: bool,
        storage_driver: Option<Driver>,
        forward_policy: Option<Policy>,
        #[schemars(regex(pattern = r"^[0-9]+[kmg]$"))]
        log_max_size: String,
        #[schemars(range(min = 1))]
        log_max_file: u8,
        #[schemars(inner(regex(pattern = r"^[a-z_][a-z0-9_-]*$"), length(max = 32)))]
        users: Vec<String>,
        #[schemars(length(max = 4096))]
        login_banner: Option<String>,
        mirrors: Vec<Mirror>,
        rules: Vec<Rule>,
        labels: std::collections::BTreeMap<String, String>,
        tree: Option<Dir>,
        spin: u64,
    }

    #[test]
    fn schemars_shaped_schemas_pass() {
        let document = serde_json::to_value(schemars::schema_for!(Options)).unwrap();
        let text = document.to_string();
        assert!(text.contains("$defs") && text.contains("anyOf") && text.contains("oneOf"));
        let graph = Graph::of(&document).expect("within bounds");
        eprintln!(
            "schemars options: {} bytes, {} nodes, expansion {}",
            text.len(),
            graph.nodes.len(),
            expansion(&graph.nodes)
        );
        let schema = Schema::compile(document).expect("compiles");
        let options = json!({
            "storage_driver": "vfs",
            "users": ["alice"],
            "mirrors": [{"url": "https://mirror.example"}],
            "rules": [{"kind": "port", "port": 22, "proto": null}, {"kind": "host", "name": "a"}],
            "labels": {"a": "b"},
            "tree": {"name": "/", "children": [{"name": "etc", "children": []}]},
        });
        assert!(check(&schema, &options).is_empty());
        let diags = check(
            &schema,
            &json!({"storage_driver": "zfs", "users": ["Root"]}),
        );
        assert_eq!(diags.len(), 2, "{diags:?}");
    }

    #[test]
    fn the_recipe_schema_is_well_within_bounds() {
        let document = crate::validate::recipe_schema().document();
        let graph = Graph::of(document).expect("within bounds");
        let size = expansion(&graph.nodes);
        eprintln!(
            "recipe schema: {} bytes, {} nodes, expansion {size}",
            document.to_string().len(),
            graph.nodes.len()
        );
        assert!(size < MAX_EXPANSION / 4, "{size}");
    }

    /// The dearest schema to compile: the largest document, with the most
    /// patterns, each near the size limit.
    #[test]
    fn the_dearest_passing_schema_compiles_quickly() {
        let mut properties: Map<String, Value> = (0..MAX_PATTERNS)
            .map(|i| {
                let pattern = format!("^(a|b)*a(a|b){{{}}}$", 60 + i % 40);
                let name = format!("p{i}{}", "_".repeat(i % 7));
                (name, json!({"type": "string", "pattern": pattern}))
            })
            .collect();
        let mut size = json!({ "properties": properties }).to_string().len();
        let mut i = 0;
        while size < MAX_SCHEMA_BYTES - 100 {
            let (name, schema) = (format!("q{i}"), json!({"type": "integer", "minimum": i}));
            size += name.len() + schema.to_string().len() + 4;
            properties.insert(name, schema);
            i += 1;
        }
        let document = json!({ "properties": properties });
        let size = document.to_string().len();
        let (result, _) = timed(
            &format!("compile {size} bytes, {MAX_PATTERNS} patterns"),
            || Schema::compile(document),
        );
        result.expect("within bounds");
    }

    /// The worst schemas that pass the bounds, each with an instance built to
    /// make its check as dear as the budget allows: the time is printed, not
    /// asserted (this crate's debug build is several times slower than release).
    #[test]
    fn the_worst_passing_schemas_check_in_bounded_time() {
        // The largest doubling chain that passes: 2^14 leaves with a pattern.
        let chain = doubling(14, "allOf");
        Schema::compile(doubling(15, "allOf")).expect_err("depth 15 is refused");
        let schema = Schema::compile(json!({
            "type": "array",
            "items": {"$ref": "#/$defs/d14"},
            "$defs": chain["$defs"].clone(),
        }))
        .expect("within bounds");
        let one = schema.graph.cost(&json!(["b"])).unwrap().steps;
        let most = (MAX_CHECK_STEPS / one) as usize;
        for (label, item) in [("failing", "b"), ("passing", "a")] {
            let instance = Value::Array(vec![json!(item); most]);
            let label = format!("worst DAG, {most} {label} strings");
            let diags = measure(&label, &schema, &instance);
            assert_eq!(diags.len(), usize::from(item == "b"), "{diags:?}");
        }
        let beyond = Value::Array(vec![json!("b"); most + 1]);
        let diags = measure("worst DAG, one string more", &schema, &beyond);
        assert_eq!(diags[0].code, "options.too-complex");
        // The dearest check that still explains every error: 2^10 failing leaves.
        let schema = Schema::compile(doubling(10, "allOf")).unwrap();
        let instance = json!({"x": "b"});
        let steps = schema.graph.cost(&instance).unwrap().steps;
        assert!(steps <= MAX_EXPLAIN_STEPS, "{steps}");
        let diags = measure("every error of 2^10 failing leaves", &schema, &instance);
        assert_eq!(diags.len(), 1024);
        // Alternatives that all fail keep every error: reported without them.
        let chain = doubling(14, "anyOf");
        let schema = Schema::compile(json!({
            "type": "array",
            "items": {"$ref": "#/$defs/d14"},
            "$defs": chain["$defs"].clone(),
        }))
        .expect("within bounds");
        let instance = Value::Array(vec![json!("b"); most]);
        let diags = measure(
            &format!("worst anyOf DAG, {most} failing strings"),
            &schema,
            &instance,
        );
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!(diags[0].code, "options.invalid");
        assert!(check(&schema, &json!(["a", "aa"])).is_empty());
        // The most errors explained: each a cheap failure.
        let schema = Schema::compile(json!({"items": {"type": "integer"}})).unwrap();
        let most = ((MAX_EXPLAIN_STEPS - 1) / 2) as usize;
        let instance = Value::Array(vec![json!("x"); most]);
        let diags = measure(&format!("{most} errors explained"), &schema, &instance);
        assert_eq!(diags.len(), most);
        // A pattern whose lazy DFA thrashes, on the longest string the budget allows.
        let schema = Schema::compile(json!({"pattern": "^(a|b)*a(a|b){100}$"})).unwrap();
        let mut x: u32 = 1;
        let longest = (MAX_CHECK_STEPS / STEPS_PER_MATCHED_BYTE) as usize - 2;
        let text: String = (0..longest)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                if (x >> 16) & 1 == 0 { 'a' } else { 'b' }
            })
            .collect();
        let label = format!("hostile pattern, {longest}-byte string");
        let diags = measure(&label, &schema, &json!(text));
        assert!(diags.len() <= 1);
        let longer = text.repeat(2);
        let diags = measure("hostile pattern, twice as long", &schema, &json!(longer));
        assert_eq!(diags[0].code, "options.too-complex");
        // The recursion that doubles, at the deepest (valid) instance within budget.
        let schema = Schema::compile(json!({
            "$defs": {"n": {
                "type": "object",
                "properties": {"c": {"allOf": [{"$ref": "#/$defs/n"}, {"$ref": "#/$defs/n"}]}},
            }},
            "$ref": "#/$defs/n",
        }))
        .unwrap();
        let mut nested = json!({});
        let mut depth = 0;
        while schema.graph.cost(&json!({ "c": nested })).is_ok() {
            nested = json!({ "c": nested });
            depth += 1;
        }
        let label = format!("doubling recursion, depth {depth}");
        let diags = measure(&label, &schema, &nested);
        assert!(diags.is_empty(), "{diags:?}");
        // The largest recipe (2 MiB), of the smallest values, against the recipe schema.
        let schema = crate::validate::recipe_schema();
        let count = crate::validate::MAX_RECIPE_BYTES / 4 - 100;
        let recipe = json!({
            "name": "big",
            "base_image": "debian-12",
            "packages": vec!["p"; count],
        });
        assert!(recipe.to_string().len() <= crate::validate::MAX_RECIPE_BYTES);
        let diags = measure(&format!("2 MiB recipe, {count} packages"), schema, &recipe);
        assert!(
            diags.iter().all(|d| !d.code.starts_with("options.too")),
            "{diags:?}"
        );
    }
}
