//! Label and field selectors, parsed and matched the way the Kubernetes API
//! server does (`k8s.io/apimachinery/pkg/labels` and `.../fields`), so that
//! `kubectl get -l` / `--field-selector` and client-go informers see the same
//! results and the same error messages as against a real cluster.
//!
//! ```
//! use trellis_api::{registry, selectors::{FieldSelector, LabelSelector}};
//! use serde_json::json;
//!
//! let pod = json!({"metadata": {"name": "web", "labels": {"app": "web", "tier": "fe"}},
//!                  "spec": {}});
//! let sel = LabelSelector::parse("app in (web,api), !canary").unwrap();
//! assert!(sel.matches_object(&pod));
//!
//! let pods = registry::by_kind("", "Pod").unwrap();
//! let unscheduled = FieldSelector::parse("spec.nodeName=", pods).unwrap();
//! assert!(unscheduled.matches(&pod));
//! ```

use std::fmt;

use serde_json::{Map, Value};

use crate::registry::Kind;

/// Why a selector was refused. Every variant is a client error (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// A label selector term could not be read or failed validation; the
    /// message is upstream's, e.g. `found ')', expected: identifier` or
    /// `<nil>: Invalid value: "-a": name part must ...`.
    #[error("unable to parse requirement: {0}")]
    InvalidRequirement(String),
    /// A label selector had an unexpected token between requirements.
    #[error("found '{found}', expected: {expected}")]
    UnexpectedToken {
        /// The literal that was found ("" at the end of the input).
        found: String,
        /// What the grammar allowed there.
        expected: &'static str,
    },
    /// A `matchExpressions` entry used an operator other than In, NotIn,
    /// Exists or DoesNotExist.
    #[error("{0:?} is not a valid label selector operator")]
    InvalidOperator(String),
    /// A field selector term has no `=`, `==` or `!=`.
    #[error("invalid selector: '{selector}'; can't understand '{term}'")]
    InvalidFieldTerm {
        /// The whole selector.
        selector: String,
        /// The term that could not be split.
        term: String,
    },
    /// A field selector value has a backslash not followed by `\`, `,` or `=`.
    #[error("invalid field selector: invalid escape sequence: {0}")]
    InvalidEscape(String),
    /// A field selector value contains a bare `,` or `=` (they must be escaped).
    #[error("invalid field selector: unescaped character in value: {0}")]
    UnescapedCharacter(char),
    /// The field cannot be selected on for this kind (kinds with their own
    /// field list upstream: Pod, Node, Namespace, Event, Secret, Service,
    /// ReplicationController and custom resources).
    #[error("field label not supported: {0}")]
    FieldLabelNotSupported(String),
    /// The field cannot be selected on for a Job (upstream words it apart).
    #[error("field label {field:?} not supported for {kind}")]
    FieldLabelNotSupportedForKind {
        /// The refused field.
        field: String,
        /// The kind, e.g. "Job".
        kind: &'static str,
    },
    /// The field cannot be selected on for a kind that only supports object
    /// metadata fields (upstream's default conversion).
    #[error("{0:?} is not a known field selector: only \"metadata.name\", \"metadata.namespace\"")]
    UnknownField(String),
}

// ---------------------------------------------------------------------------
// Label selectors
// ---------------------------------------------------------------------------

/// A label selector operator (`k8s.io/apimachinery/pkg/selection`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `key=value`.
    Equals,
    /// `key==value`.
    DoubleEquals,
    /// `key!=value` (also true when the label is absent).
    NotEquals,
    /// `key in (a,b)`.
    In,
    /// `key notin (a,b)` (also true when the label is absent).
    NotIn,
    /// `key`.
    Exists,
    /// `!key`.
    DoesNotExist,
    /// `key>n`, integer comparison.
    GreaterThan,
    /// `key<n`, integer comparison.
    LessThan,
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    operator: Operator,
    /// Sorted and deduplicated, as upstream's `sets.String.List()`.
    values: Vec<String>,
}

impl Requirement {
    /// The label key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The operator.
    pub fn operator(&self) -> Operator {
        self.operator
    }

    /// The values, sorted (empty for Exists and DoesNotExist).
    pub fn values(&self) -> &[String] {
        &self.values
    }

    fn new(key: String, operator: Operator, mut values: Vec<String>) -> Result<Self, String> {
        values.sort();
        values.dedup();
        let mut errs = Vec::new();
        if let Err(e) = validate_label_key(&key, "key") {
            errs.push(e);
        }
        let all = go_string_slice(&values);
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => errs.push(format!(
                "values: Invalid value: {all}: for 'in', 'notin' operators, values set can't be empty"
            )),
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals
                if values.len() != 1 =>
            {
                errs.push(format!(
                    "values: Invalid value: {all}: exact-match compatibility requires one single value"
                ))
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => errs.push(format!(
                "values: Invalid value: {all}: values set must be empty for exists and does not exist"
            )),
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    errs.push(format!(
                        "values: Invalid value: {all}: for 'Gt', 'Lt' operators, exactly one value is required"
                    ));
                }
                for (i, v) in values.iter().enumerate() {
                    if v.parse::<i64>().is_err() {
                        errs.push(format!(
                            "values[{i}]: Invalid value: {}: for 'Gt', 'Lt' operators, the value must be an integer",
                            go_quote(v)
                        ));
                    }
                }
            }
            _ => {}
        }
        for (i, v) in values.iter().enumerate() {
            let problems = label_value_errors(v);
            if !problems.is_empty() {
                errs.push(format!(
                    "values[{i}][{key}]: Invalid value: {}: {}",
                    go_quote(v),
                    problems.join("; ")
                ));
            }
        }
        match errs.len() {
            0 => Ok(Requirement {
                key,
                operator,
                values,
            }),
            // Upstream aggregates several field errors as "[a, b]".
            1 => Err(errs.remove(0)),
            _ => Err(format!("[{}]", errs.join(", "))),
        }
    }

    fn matches(&self, labels: &Map<String, Value>) -> bool {
        let value = labels.get(&self.key).map(label_text);
        match self.operator {
            Operator::In | Operator::Equals | Operator::DoubleEquals => {
                value.is_some_and(|v| self.values.contains(&v))
            }
            Operator::NotIn | Operator::NotEquals => {
                value.is_none_or(|v| !self.values.contains(&v))
            }
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let Some(have) = value.and_then(|v| v.parse::<i64>().ok()) else {
                    return false;
                };
                let [want] = self.values.as_slice() else {
                    return false;
                };
                let Ok(want) = want.parse::<i64>() else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.operator == Operator::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let (op, parens) = match self.operator {
            Operator::Exists | Operator::DoesNotExist => return Ok(()),
            Operator::Equals => ("=", false),
            Operator::DoubleEquals => ("==", false),
            Operator::NotEquals => ("!=", false),
            Operator::In => (" in ", true),
            Operator::NotIn => (" notin ", true),
            Operator::GreaterThan => (">", false),
            Operator::LessThan => ("<", false),
        };
        f.write_str(op)?;
        if parens {
            f.write_str("(")?;
        }
        f.write_str(&self.values.join(","))?;
        if parens {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// A parsed label selector: all requirements must hold. Empty selects all.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LabelSelector {
    /// Sorted by key, as upstream does, so equal selectors compare equal.
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses the `labelSelector` query parameter syntax: comma-separated
    /// `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a)`, `k`, `!k`, `k>1`,
    /// `k<1`, with whitespace allowed between tokens. Keys and values are
    /// validated as upstream's `labels.Parse` does.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let tokens = lex(s);
        let mut p = Parser { tokens, pos: 0 };
        let mut requirements = p.parse()?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector { requirements })
    }

    /// Converts a `metav1.LabelSelector` object (`matchLabels`,
    /// `matchExpressions`) as `metav1.LabelSelectorAsSelector` does.
    ///
    /// A `null` selector is returned as the empty selector, which matches
    /// everything; upstream treats a nil selector as matching nothing, so
    /// callers for which that matters must check for `null` themselves.
    pub fn from_label_selector(sel: &Value) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        if let Some(labels) = sel.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in labels {
                requirements.push(
                    Requirement::new(k.clone(), Operator::Equals, vec![label_text(v)])
                        .map_err(SelectorError::InvalidRequirement)?,
                );
            }
        }
        if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
            for e in exprs {
                let op = match e["operator"].as_str().unwrap_or("") {
                    "In" => Operator::In,
                    "NotIn" => Operator::NotIn,
                    "Exists" => Operator::Exists,
                    "DoesNotExist" => Operator::DoesNotExist,
                    other => return Err(SelectorError::InvalidOperator(other.to_string())),
                };
                let values = e["values"]
                    .as_array()
                    .map(|vs| vs.iter().map(label_text).collect())
                    .unwrap_or_default();
                let key = e["key"].as_str().unwrap_or("").to_string();
                requirements.push(
                    Requirement::new(key, op, values).map_err(SelectorError::InvalidRequirement)?,
                );
            }
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector { requirements })
    }

    /// Whether `labels` (an object's `metadata.labels`) satisfy every requirement.
    pub fn matches(&self, labels: &Map<String, Value>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether the object's `metadata.labels` (missing: no labels) match.
    pub fn matches_object(&self, obj: &Value) -> bool {
        if self.requirements.is_empty() {
            return true;
        }
        let empty = Map::new();
        let labels = obj["metadata"]["labels"].as_object().unwrap_or(&empty);
        self.matches(labels)
    }

    /// True for the empty selector, which matches everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }
}

impl fmt::Display for LabelSelector {
    /// Upstream's canonical form, e.g. `app=web,tier in (be,fe)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Label values are strings; anything else is compared by its JSON text so a
/// hand-written `{"replicas": 3}` label still behaves predictably.
fn label_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    End,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
    Error,
}

fn keyword(s: &str) -> Option<Tok> {
    Some(match s {
        ")" => Tok::ClosedPar,
        "," => Tok::Comma,
        "!" => Tok::DoesNotExist,
        "==" => Tok::DoubleEquals,
        "=" => Tok::Equals,
        ">" => Tok::GreaterThan,
        "in" => Tok::In,
        "<" => Tok::LessThan,
        "!=" => Tok::NotEquals,
        "notin" => Tok::NotIn,
        "(" => Tok::OpenPar,
        _ => return None,
    })
}

fn is_special(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Tokenises like upstream's `Lexer`: identifiers run until whitespace or a
/// special symbol, and special symbols are read greedily while they still
/// form a known operator (so `!=` is one token, `=!` two).
fn lex(s: &str) -> Vec<(Tok, String)> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        while i < b.len() && is_space(b[i]) {
            i += 1;
        }
        if i >= b.len() {
            out.push((Tok::End, String::new()));
            return out;
        }
        let start = i;
        if is_special(b[i]) {
            let mut last: Option<(Tok, usize)> = None;
            while i < b.len() && is_special(b[i]) {
                i += 1;
                match keyword(&s[start..i]) {
                    Some(t) => last = Some((t, i)),
                    None if last.is_some() => break,
                    None => {}
                }
            }
            match last {
                Some((t, end)) => {
                    out.push((t, s[start..end].to_string()));
                    i = end;
                }
                None => {
                    out.push((
                        Tok::Error,
                        format!("error expected: keyword found '{}'", &s[start..i]),
                    ));
                    out.push((Tok::End, String::new()));
                    return out;
                }
            }
        } else {
            while i < b.len() && !is_special(b[i]) && !is_space(b[i]) {
                i += 1;
            }
            let lit = &s[start..i];
            out.push((keyword(lit).unwrap_or(Tok::Identifier), lit.to_string()));
        }
    }
}

/// Where the parser is: `in`/`notin` are identifiers when a value or key is
/// expected, keywords only in operator position.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ctx {
    KeyAndOperator,
    Values,
}

struct Parser {
    tokens: Vec<(Tok, String)>,
    pos: usize,
}

impl Parser {
    fn lookahead(&self, ctx: Ctx) -> (Tok, String) {
        let (mut t, lit) = self.tokens[self.pos.min(self.tokens.len() - 1)].clone();
        if ctx == Ctx::Values && matches!(t, Tok::In | Tok::NotIn) {
            t = Tok::Identifier;
        }
        (t, lit)
    }

    fn consume(&mut self, ctx: Ctx) -> (Tok, String) {
        let r = self.lookahead(ctx);
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        r
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut reqs = Vec::new();
        loop {
            let (t, lit) = self.lookahead(Ctx::Values);
            match t {
                Tok::Identifier | Tok::DoesNotExist => {
                    reqs.push(
                        self.requirement()
                            .map_err(SelectorError::InvalidRequirement)?,
                    );
                    let (t, lit) = self.consume(Ctx::Values);
                    match t {
                        Tok::End => return Ok(reqs),
                        Tok::Comma => {
                            let (t2, lit2) = self.lookahead(Ctx::Values);
                            if t2 != Tok::Identifier && t2 != Tok::DoesNotExist {
                                return Err(SelectorError::UnexpectedToken {
                                    found: lit2,
                                    expected: "identifier after ','",
                                });
                            }
                        }
                        _ => {
                            return Err(SelectorError::UnexpectedToken {
                                found: lit,
                                expected: "',' or 'end of string'",
                            })
                        }
                    }
                }
                Tok::End => return Ok(reqs),
                _ => {
                    return Err(SelectorError::UnexpectedToken {
                        found: lit,
                        expected: "!, identifier, or 'end of string'",
                    })
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        let mut negated = false;
        let (mut t, mut lit) = self.consume(Ctx::Values);
        if t == Tok::DoesNotExist {
            negated = true;
            (t, lit) = self.consume(Ctx::Values);
        }
        if t != Tok::Identifier {
            return Err(format!("found '{lit}', expected: identifier"));
        }
        validate_label_key(&lit, "<nil>")?;
        let key = lit;
        let (next, _) = self.lookahead(Ctx::Values);
        if negated {
            // `!key` takes no operator; anything after it is the caller's
            // "expected ',' or end of string" error, as upstream.
            return Requirement::new(key, Operator::DoesNotExist, Vec::new());
        }
        if next == Tok::End || next == Tok::Comma {
            return Requirement::new(key, Operator::Exists, Vec::new());
        }
        let (t, lit) = self.consume(Ctx::KeyAndOperator);
        let op = match t {
            Tok::In => Operator::In,
            Tok::Equals => Operator::Equals,
            Tok::DoubleEquals => Operator::DoubleEquals,
            Tok::GreaterThan => Operator::GreaterThan,
            Tok::LessThan => Operator::LessThan,
            Tok::NotIn => Operator::NotIn,
            Tok::NotEquals => Operator::NotEquals,
            _ => {
                return Err(format!(
                    "found '{lit}', expected: in, notin, =, ==, !=, gt, lt"
                ))
            }
        };
        let values = match op {
            Operator::In | Operator::NotIn => self.values()?,
            _ => self.exact_value()?,
        };
        Requirement::new(key, op, values)
    }

    fn values(&mut self) -> Result<Vec<String>, String> {
        let (t, lit) = self.consume(Ctx::Values);
        if t != Tok::OpenPar {
            return Err(format!("found '{lit}' expected: '('"));
        }
        let (t, lit) = self.lookahead(Ctx::Values);
        match t {
            Tok::Identifier | Tok::Comma => {
                let vals = self.identifiers()?;
                let (t, _) = self.consume(Ctx::Values);
                if t != Tok::ClosedPar {
                    return Err(format!("found '{lit}', expected: ')'"));
                }
                Ok(vals)
            }
            // "()" is one empty value, as upstream.
            Tok::ClosedPar => {
                self.consume(Ctx::Values);
                Ok(vec![String::new()])
            }
            _ => Err(format!("found '{lit}', expected: ',', ')' or identifier")),
        }
    }

    fn identifiers(&mut self) -> Result<Vec<String>, String> {
        // Empty entries ("(,a)", "(a,)", "(a,,b)") stand for the empty value.
        let mut out: Vec<String> = Vec::new();
        loop {
            let (t, lit) = self.consume(Ctx::Values);
            match t {
                Tok::Identifier => {
                    out.push(lit);
                    let (t2, lit2) = self.lookahead(Ctx::Values);
                    match t2 {
                        Tok::Comma => continue,
                        Tok::ClosedPar => return Ok(out),
                        _ => return Err(format!("found '{lit2}', expected: ',' or ')'")),
                    }
                }
                Tok::Comma => {
                    if out.is_empty() {
                        out.push(String::new());
                    }
                    let (t2, _) = self.lookahead(Ctx::Values);
                    if t2 == Tok::ClosedPar {
                        out.push(String::new());
                        return Ok(out);
                    }
                    if t2 == Tok::Comma {
                        self.consume(Ctx::Values);
                        out.push(String::new());
                    }
                }
                _ => return Err(format!("found '{lit}', expected: ',', or identifier")),
            }
        }
    }

    fn exact_value(&mut self) -> Result<Vec<String>, String> {
        let (t, _) = self.lookahead(Ctx::Values);
        if t == Tok::End || t == Tok::Comma {
            return Ok(vec![String::new()]);
        }
        let (t, lit) = self.consume(Ctx::Values);
        if t == Tok::Identifier {
            Ok(vec![lit])
        } else {
            Err(format!("found '{lit}', expected: identifier"))
        }
    }
}

// Key and value rules are upstream's `IsQualifiedName` and
// `IsValidLabelValue`, shared with object validation.
use crate::validation::names::{
    label_value as label_value_errors, qualified_name as qualified_name_errors,
};

/// `path` is the field path upstream prints; labels.Parse has none, which Go
/// prints as `<nil>` (kept because users paste these messages into searches).
fn validate_label_key(key: &str, path: &str) -> Result<(), String> {
    let errs = qualified_name_errors(key);
    if errs.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{path}: Invalid value: {}: {}",
            go_quote(key),
            errs.join("; ")
        ))
    }
}

/// Go's `%#v` of a `[]string`, as upstream prints a bad values list.
fn go_string_slice(values: &[String]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| go_quote(v)).collect();
    format!("[]string{{{}}}", quoted.join(", "))
}

/// Go's `%q` for the printable ASCII that selectors contain.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

// ---------------------------------------------------------------------------
// Field selectors
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldTerm {
    field: String,
    value: String,
    /// `!=`
    negated: bool,
}

/// A parsed field selector for one kind: all terms must hold. Empty selects all.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldSelector {
    kind: Kind,
    terms: Vec<FieldTerm>,
}

/// How a kind's field labels are checked; each mirrors one upstream
/// conversion function so the error text matches too.
enum FieldRules {
    /// A kind-specific list, refused with "field label not supported".
    Listed(&'static [&'static str]),
    /// Job's list, refused with its own wording.
    Job,
    /// Only object metadata fields (upstream's default conversion).
    Default,
}

const POD_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.podIPs",
    "status.nominatedNodeName",
];
const EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
    "metadata.namespace",
    "metadata.name",
];

fn field_rules(kind: &Kind) -> FieldRules {
    match (kind.group, kind.kind) {
        ("", "Pod") => FieldRules::Listed(POD_FIELDS),
        ("", "Node") => FieldRules::Listed(&["metadata.name", "spec.unschedulable"]),
        ("", "Namespace") => FieldRules::Listed(&["metadata.name", "status.phase"]),
        ("", "Event") => FieldRules::Listed(EVENT_FIELDS),
        ("", "Secret") => FieldRules::Listed(&["metadata.name", "metadata.namespace", "type"]),
        ("", "Service") => FieldRules::Listed(&[
            "metadata.name",
            "metadata.namespace",
            "spec.clusterIP",
            "spec.type",
        ]),
        ("", "ReplicationController") => {
            FieldRules::Listed(&["metadata.name", "metadata.namespace", "status.replicas"])
        }
        ("batch", "Job") => FieldRules::Job,
        // Built-in groups use the default conversion; anything else is served
        // like a custom resource, which upstream lists itself.
        (
            ""
            | "apps"
            | "batch"
            | "autoscaling"
            | "coordination.k8s.io"
            | "rbac.authorization.k8s.io"
            | "discovery.k8s.io",
            _,
        ) => FieldRules::Default,
        _ if kind.namespaced => FieldRules::Listed(&["metadata.name", "metadata.namespace"]),
        _ => FieldRules::Listed(&["metadata.name"]),
    }
}

/// Checks `field` for `kind` and returns the name it is stored under
/// (upstream's field label conversion).
fn convert_field_label(kind: &Kind, field: &str) -> Result<String, SelectorError> {
    // Pre-v1 clients say spec.host for the node a pod is bound to.
    if kind.group.is_empty() && kind.kind == "Pod" && field == "spec.host" {
        return Ok("spec.nodeName".to_string());
    }
    // ReplicaSet's status.replicas is in its selectable fields upstream; we
    // accept it like ReplicationController's.
    if kind.group == "apps" && kind.kind == "ReplicaSet" && field == "status.replicas" {
        return Ok(field.to_string());
    }
    match field_rules(kind) {
        FieldRules::Listed(list) if list.contains(&field) => Ok(field.to_string()),
        FieldRules::Listed(_) => Err(SelectorError::FieldLabelNotSupported(field.to_string())),
        FieldRules::Job => match field {
            "metadata.name" | "metadata.namespace" | "status.successful" => Ok(field.to_string()),
            _ => Err(SelectorError::FieldLabelNotSupportedForKind {
                field: field.to_string(),
                kind: "Job",
            }),
        },
        FieldRules::Default => match field {
            "metadata.name" | "metadata.namespace" => Ok(field.to_string()),
            _ => Err(SelectorError::UnknownField(field.to_string())),
        },
    }
}

/// Upstream's `splitTerms`: commas split terms unless escaped.
fn split_terms(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in s.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&s[start..i]);
            start = i + 1;
        }
    }
    terms.push(&s[start..]);
    terms
}

/// Upstream's `splitTerm`: the first `!=`, `==` or `=` from the left.
fn split_term(term: &str) -> Option<(&str, &str, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for op in ["!=", "==", "="] {
            if rest.starts_with(op) {
                return Some((&term[..i], op, &term[i + op.len()..]));
            }
        }
    }
    None
}

/// Upstream's `UnescapeValue`: `\\`, `\,` and `\=` are the only escapes,
/// and bare `,`/`=` are refused.
fn unescape_value(s: &str) -> Result<String, SelectorError> {
    if !s.contains(['\\', ',', '=']) {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            match c {
                '\\' | ',' | '=' => out.push(c),
                _ => return Err(SelectorError::InvalidEscape(format!("\\{c}"))),
            }
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            ',' | '=' => return Err(SelectorError::UnescapedCharacter(c)),
            _ => out.push(c),
        }
    }
    if in_slash {
        return Err(SelectorError::InvalidEscape("\\".to_string()));
    }
    Ok(out)
}

impl FieldSelector {
    /// Parses the `fieldSelector` query parameter for objects of `kind`:
    /// comma-separated `field=value`, `field==value`, `field!=value`, with
    /// `\,`, `\=` and `\\` escapes in values and no whitespace trimming.
    /// Fields the kind does not support are refused with upstream's message.
    pub fn parse(s: &str, kind: &Kind) -> Result<Self, SelectorError> {
        let mut parts = split_terms(s);
        parts.sort_unstable();
        let mut terms = Vec::new();
        for part in parts {
            if part.is_empty() {
                continue;
            }
            let Some((lhs, op, rhs)) = split_term(part) else {
                return Err(SelectorError::InvalidFieldTerm {
                    selector: s.to_string(),
                    term: part.to_string(),
                });
            };
            let value = unescape_value(rhs)?;
            let field = convert_field_label(kind, lhs)?;
            terms.push(FieldTerm {
                field,
                value,
                negated: op == "!=",
            });
        }
        Ok(FieldSelector { kind: *kind, terms })
    }

    /// Whether the object satisfies every term. Missing fields compare as
    /// their Go zero value: "" for strings, "false" for booleans, "0" for
    /// counts (so `spec.nodeName=` selects unscheduled pods).
    pub fn matches(&self, obj: &Value) -> bool {
        self.terms.iter().all(|t| {
            let have = field_value(&self.kind, obj, &t.field);
            (have == t.value) != t.negated
        })
    }

    /// True for the empty selector, which matches everything.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The value required for `field` by an equality term, if any (lets the
    /// server narrow a list, e.g. `metadata.name`). With two conflicting
    /// equality terms this returns the first; `matches` still rejects all.
    pub fn required_value(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| !t.negated && t.field == field)
            .map(|t| t.value.as_str())
    }
}

impl fmt::Display for FieldSelector {
    /// The canonical form, values re-escaped, e.g. `metadata.name=web,spec.nodeName!=`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            let escaped = t
                .value
                .replace('\\', "\\\\")
                .replace(',', "\\,")
                .replace('=', "\\=");
            let op = if t.negated { "!=" } else { "=" };
            write!(f, "{}{op}{escaped}", t.field)?;
        }
        Ok(())
    }
}

fn str_at<'a>(obj: &'a Value, path: &[&str]) -> &'a str {
    path.iter().fold(obj, |v, p| &v[*p]).as_str().unwrap_or("")
}

fn bool_at(obj: &Value, path: &[&str]) -> String {
    let b = path
        .iter()
        .fold(obj, |v, p| &v[*p])
        .as_bool()
        .unwrap_or(false);
    b.to_string()
}

fn int_at(obj: &Value, path: &[&str]) -> String {
    path.iter()
        .fold(obj, |v, p| &v[*p])
        .as_i64()
        .unwrap_or(0)
        .to_string()
}

/// The selectable value of `field` (already converted) on `obj`, as
/// upstream's per-kind `ToSelectableFields`.
fn field_value(kind: &Kind, obj: &Value, field: &str) -> String {
    match field {
        "metadata.name" => return str_at(obj, &["metadata", "name"]).to_string(),
        "metadata.namespace" => {
            // Cluster-scoped objects have no namespace field to select on.
            return if kind.namespaced {
                str_at(obj, &["metadata", "namespace"]).to_string()
            } else {
                String::new()
            };
        }
        _ => {}
    }
    match (kind.kind, field) {
        ("Pod", "spec.hostNetwork") => bool_at(obj, &["spec", "hostNetwork"]),
        ("Pod", "status.podIP") => {
            // Upstream reads podIPs[0]; older writers only set podIP.
            let first = obj["status"]["podIPs"][0]["ip"].as_str().unwrap_or("");
            if first.is_empty() {
                str_at(obj, &["status", "podIP"]).to_string()
            } else {
                first.to_string()
            }
        }
        // Accepted upstream but never populated, so it always reads "".
        ("Pod", "status.podIPs") => String::new(),
        ("Node", "spec.unschedulable") => bool_at(obj, &["spec", "unschedulable"]),
        ("Event", "source") => {
            let c = str_at(obj, &["source", "component"]);
            if c.is_empty() {
                str_at(obj, &["reportingComponent"]).to_string()
            } else {
                c.to_string()
            }
        }
        ("ReplicaSet" | "ReplicationController", "status.replicas") => {
            int_at(obj, &["status", "replicas"])
        }
        ("Job", "status.successful") => int_at(obj, &["status", "succeeded"]),
        _ => {
            let path: Vec<&str> = field.split('.').collect();
            str_at(obj, &path).to_string()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::by_kind;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn label_selector_operators_match() {
        let l = labels(json!({"app": "web", "tier": "fe", "n": "5", "empty": ""}));
        let cases: &[(&str, bool)] = &[
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app=api", false),
            ("app!=api", true),
            ("app!=web", false),
            ("missing!=x", true),
            ("app in (web,api)", true),
            ("app in (api)", false),
            ("missing in (x)", false),
            ("app notin (api)", true),
            ("app notin (web)", false),
            ("missing notin (x)", true),
            ("app", true),
            ("missing", false),
            ("!missing", true),
            ("!app", false),
            ("n>4", true),
            ("n>5", false),
            ("n<6", true),
            ("app>1", false),
            ("missing<1", false),
            ("empty=", true),
            ("empty in (,x)", true),
            ("app=web,tier=fe", true),
            ("app=web,tier=be", false),
            ("  app = web ,  tier in ( fe , be )  ", true),
            ("app in(web)", true),
            ("x in (in,notin),app=web", false),
            ("app=in", false),
            ("example.com/team", false),
        ];
        for (sel, want) in cases {
            let s = LabelSelector::parse(sel).unwrap_or_else(|e| panic!("{sel}: {e}"));
            assert_eq!(s.matches(&l), *want, "{sel}");
        }
    }

    #[test]
    fn label_selector_canonical_form_and_emptiness() {
        let s = LabelSelector::parse("tier in (fe,be,fe),!canary,app=web,n>3").unwrap();
        assert_eq!(s.to_string(), "app=web,!canary,n>3,tier in (be,fe)");
        assert!(!s.is_empty());
        assert!(LabelSelector::parse("").unwrap().is_empty());
        assert!(LabelSelector::parse("   ").unwrap().is_empty());
        assert_eq!(
            LabelSelector::parse("b=1,a=2").unwrap(),
            LabelSelector::parse("a=2,b=1").unwrap()
        );
        let r = &s.requirements()[3];
        assert_eq!((r.key(), r.operator()), ("tier", Operator::In));
        assert_eq!(r.values(), ["be", "fe"]);
    }

    #[test]
    fn label_selector_rejects_bad_input() {
        let name_part = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
        let long_value = format!("a={}", "x".repeat(64));
        let long_key = format!("{}=b", "k".repeat(64));
        let cases: &[(&str, String)] = &[
            (
                "app:web",
                format!("unable to parse requirement: <nil>: Invalid value: \"app:web\": {name_part}"),
            ),
            (
                "-a=b",
                format!("unable to parse requirement: <nil>: Invalid value: \"-a\": {name_part}"),
            ),
            (
                "a/b/c=d",
                "unable to parse requirement: <nil>: Invalid value: \"a/b/c\": a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')".into(),
            ),
            (
                "Example.com/a",
                "unable to parse requirement: <nil>: Invalid value: \"Example.com/a\": prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".into(),
            ),
            (
                "a=-b",
                "unable to parse requirement: values[0][a]: Invalid value: \"-b\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')".into(),
            ),
            (
                &long_value,
                format!("unable to parse requirement: values[0][a]: Invalid value: \"{}\": must be no more than 63 characters", "x".repeat(64)),
            ),
            (
                &long_key,
                format!("unable to parse requirement: <nil>: Invalid value: \"{}\": name part must be no more than 63 characters", "k".repeat(64)),
            ),
            (
                "a>b",
                "unable to parse requirement: values[0]: Invalid value: \"b\": for 'Gt', 'Lt' operators, the value must be an integer".into(),
            ),
            ("a b", "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt".into()),
            ("a=b c", "found 'c', expected: ',' or 'end of string'".into()),
            ("a=b,", "found '', expected: identifier after ','".into()),
            (",a", "found ',', expected: !, identifier, or 'end of string'".into()),
            ("=b", "found '=', expected: !, identifier, or 'end of string'".into()),
            ("!a=b", "found '=', expected: ',' or 'end of string'".into()),
            ("a in b", "unable to parse requirement: found 'b' expected: '('".into()),
            ("a in (b", "unable to parse requirement: found '', expected: ',' or ')'".into()),
            ("a in (b c)", "unable to parse requirement: found 'c', expected: ',' or ')'".into()),
            ("a in (=)", "unable to parse requirement: found '=', expected: ',', ')' or identifier".into()),
            ("a =! b", "unable to parse requirement: found '!', expected: identifier".into()),
            ("a (b)", "unable to parse requirement: found '(', expected: in, notin, =, ==, !=, gt, lt".into()),
            ("!", "unable to parse requirement: found '', expected: identifier".into()),
        ];
        for (sel, want) in cases {
            let err = LabelSelector::parse(sel).expect_err(sel);
            assert_eq!(err.to_string(), *want, "{sel}");
        }
    }

    #[test]
    fn label_selector_from_metav1() {
        let s = LabelSelector::from_label_selector(&json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["fe", "be"]},
                {"key": "canary", "operator": "DoesNotExist"}
            ]
        }))
        .unwrap();
        assert_eq!(s.to_string(), "app=web,!canary,tier in (be,fe)");
        assert!(s.matches(&labels(json!({"app": "web", "tier": "fe"}))));
        let err = LabelSelector::from_label_selector(&json!({
            "matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]
        }))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"Gt\" is not a valid label selector operator"
        );
        assert!(LabelSelector::from_label_selector(&Value::Null)
            .unwrap()
            .is_empty());
        let err = LabelSelector::from_label_selector(&json!({
            "matchExpressions": [{"key": "a", "operator": "In", "values": []}]
        }))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unable to parse requirement: values: Invalid value: []string{}: for 'in', 'notin' operators, values set can't be empty"
        );
        let err = LabelSelector::from_label_selector(&json!({
            "matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]
        }))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unable to parse requirement: values: Invalid value: []string{\"x\"}: values set must be empty for exists and does not exist"
        );
    }

    #[test]
    fn label_selector_reads_object_labels() {
        let s = LabelSelector::parse("!app").unwrap();
        assert!(s.matches_object(&json!({"metadata": {"name": "x"}})));
        assert!(s.matches_object(&json!({})));
        let s = LabelSelector::parse("app=web").unwrap();
        assert!(s.matches_object(&json!({"metadata": {"labels": {"app": "web"}}})));
        assert!(!s.matches_object(&json!({"metadata": {}})));
    }

    fn kind(k: &str) -> &'static Kind {
        let group = match k {
            "Deployment" | "ReplicaSet" => "apps",
            "Job" => "batch",
            "ClusterRole" => "rbac.authorization.k8s.io",
            "Plugin" => "trellis.dev",
            _ => "",
        };
        by_kind(group, k).unwrap()
    }

    #[test]
    fn field_selectors_per_kind() {
        let pod = json!({
            "metadata": {"name": "web", "namespace": "prod"},
            "spec": {"nodeName": "n1", "restartPolicy": "Always", "schedulerName": "default-scheduler",
                     "serviceAccountName": "default"},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.5"}], "podIP": "10.0.0.5"}
        });
        let unscheduled = json!({"metadata": {"name": "pending", "namespace": "prod"}, "spec": {}});
        let node = json!({"metadata": {"name": "n1"}, "spec": {"unschedulable": true}});
        let event = json!({
            "metadata": {"name": "web.1", "namespace": "prod"},
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": "prod", "uid": "u1",
                               "apiVersion": "v1", "fieldPath": "spec.containers{web}"},
            "reason": "Started", "type": "Normal", "reportingComponent": "kubelet"
        });
        let secret = json!({"metadata": {"name": "s"}, "type": "kubernetes.io/tls"});
        let ns = json!({"metadata": {"name": "prod"}, "status": {"phase": "Active"}});
        let rs = json!({"metadata": {"name": "rs"}, "status": {"replicas": 3}});
        let job = json!({"metadata": {"name": "j"}, "status": {"succeeded": 1}});
        let svc =
            json!({"metadata": {"name": "s"}, "spec": {"type": "ClusterIP", "clusterIP": "None"}});
        let cr = json!({"metadata": {"name": "admin"}});
        let cases: &[(&str, &Value, &str, bool)] = &[
            ("Pod", &pod, "", true),
            ("Pod", &pod, "metadata.name=web", true),
            ("Pod", &pod, "metadata.name==web", true),
            ("Pod", &pod, "metadata.name!=web", false),
            (
                "Pod",
                &pod,
                "metadata.namespace=prod,spec.nodeName=n1",
                true,
            ),
            ("Pod", &pod, "spec.nodeName=", false),
            ("Pod", &unscheduled, "spec.nodeName=", true),
            ("Pod", &unscheduled, "spec.nodeName!=", false),
            ("Pod", &pod, "spec.host=n1", true),
            ("Pod", &pod, "spec.hostNetwork=false", true),
            (
                "Pod",
                &pod,
                "status.phase=Running,status.podIP=10.0.0.5",
                true,
            ),
            (
                "Pod",
                &pod,
                "spec.restartPolicy=Always,spec.schedulerName=default-scheduler",
                true,
            ),
            (
                "Pod",
                &pod,
                "spec.serviceAccountName=default,status.nominatedNodeName=",
                true,
            ),
            (
                "Node",
                &node,
                "spec.unschedulable=true,metadata.name=n1",
                true,
            ),
            (
                "Node",
                &json!({"metadata": {"name": "n2"}}),
                "spec.unschedulable=false",
                true,
            ),
            (
                "Event",
                &event,
                "involvedObject.kind=Pod,involvedObject.name=web",
                true,
            ),
            (
                "Event",
                &event,
                "involvedObject.uid=u1,involvedObject.apiVersion=v1",
                true,
            ),
            (
                "Event",
                &event,
                "involvedObject.fieldPath=spec.containers{web}",
                true,
            ),
            (
                "Event",
                &event,
                "involvedObject.namespace=prod,involvedObject.resourceVersion=",
                true,
            ),
            (
                "Event",
                &event,
                "reason=Started,type=Normal,reportingComponent=kubelet",
                true,
            ),
            ("Event", &event, "source=kubelet", true),
            ("Event", &event, "type!=Normal", false),
            ("Secret", &secret, "type=kubernetes.io/tls", true),
            ("Namespace", &ns, "status.phase=Active", true),
            ("ReplicaSet", &rs, "status.replicas=3", true),
            ("ReplicaSet", &json!({}), "status.replicas=0", true),
            ("Job", &job, "status.successful=1", true),
            ("Service", &svc, "spec.clusterIP!=None", false),
            ("Service", &svc, "spec.type=ClusterIP", true),
            ("ClusterRole", &cr, "metadata.name=admin", true),
            ("ClusterRole", &cr, "metadata.namespace=", true),
            (
                "Deployment",
                &json!({"metadata": {"name": "a=b,c"}}),
                "metadata.name=a\\=b\\,c",
                true,
            ),
            (
                "ConfigMap",
                &json!({"metadata": {"name": "x"}}),
                "metadata.name=x,",
                true,
            ),
        ];
        for (k, obj, sel, want) in cases {
            let s = FieldSelector::parse(sel, kind(k)).unwrap_or_else(|e| panic!("{k} {sel}: {e}"));
            assert_eq!(s.matches(obj), *want, "{k} {sel}");
        }
    }

    #[test]
    fn field_selector_errors() {
        let cases: &[(&str, &str, &str)] = &[
            ("Pod", "spec.containers=x", "field label not supported: spec.containers"),
            ("Node", "metadata.namespace=x", "field label not supported: metadata.namespace"),
            ("Namespace", "metadata.namespace=x", "field label not supported: metadata.namespace"),
            ("Plugin", "metadata.namespace=x", "field label not supported: metadata.namespace"),
            ("Plugin", "spec.x=y", "field label not supported: spec.x"),
            ("Job", "status.active=1", "field label \"status.active\" not supported for Job"),
            (
                "Deployment",
                "spec.replicas=1",
                "\"spec.replicas\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\"",
            ),
            ("Pod", "metadata.name", "invalid selector: 'metadata.name'; can't understand 'metadata.name'"),
            ("Pod", "metadata.name=a=b", "invalid field selector: unescaped character in value: ="),
            ("Pod", "metadata.name=a\\b", "invalid field selector: invalid escape sequence: \\b"),
            ("Pod", "metadata.name=a\\", "invalid field selector: invalid escape sequence: \\"),
            ("Pod", "metadata.name =a", "field label not supported: metadata.name "),
        ];
        for (k, sel, want) in cases {
            let err = FieldSelector::parse(sel, kind(k)).expect_err(sel);
            assert_eq!(err.to_string(), *want, "{k} {sel}");
        }
    }

    #[test]
    fn field_selector_required_value_and_display() {
        let pods = kind("Pod");
        let s = FieldSelector::parse("status.phase!=Failed,metadata.name=web", pods).unwrap();
        assert_eq!(s.required_value("metadata.name"), Some("web"));
        assert_eq!(s.required_value("status.phase"), None);
        assert_eq!(s.required_value("metadata.namespace"), None);
        assert_eq!(s.to_string(), "metadata.name=web,status.phase!=Failed");
        let s = FieldSelector::parse("spec.host=n1", pods).unwrap();
        assert_eq!(s.required_value("spec.nodeName"), Some("n1"));
        assert!(FieldSelector::parse("", pods).unwrap().is_empty());
        assert!(!s.is_empty());
    }
}
