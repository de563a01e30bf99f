//! Label selectors and node selector terms, with Kubernetes' semantics.

use crate::{Label, LabelSelector, NodeSelectorTerm, Requirement, SelectorOperator};

fn get<'a>(labels: &'a [Label], key: &str) -> Option<&'a str> {
    crate::label_value(labels, key)
}

/// Whether one requirement holds for `labels`. `gt`/`lt` parse the label value
/// and the single requirement value as integers; a non-integer never matches.
pub fn requirement_matches(req: &Requirement, labels: &[Label]) -> bool {
    let value = get(labels, &req.key);
    match req.operator {
        SelectorOperator::In => value.is_some_and(|v| req.values.iter().any(|x| x == v)),
        SelectorOperator::NotIn => value.is_none_or(|v| !req.values.iter().any(|x| x == v)),
        SelectorOperator::Exists => value.is_some(),
        SelectorOperator::DoesNotExist => value.is_none(),
        SelectorOperator::Gt | SelectorOperator::Lt => {
            let (Some(v), [bound]) = (value, req.values.as_slice()) else {
                return false;
            };
            match (v.parse::<i64>(), bound.parse::<i64>()) {
                (Ok(v), Ok(b)) if req.operator == SelectorOperator::Gt => v > b,
                (Ok(v), Ok(b)) => v < b,
                _ => false,
            }
        }
    }
}

/// Whether a label selector matches `labels` (an empty selector matches all).
pub fn selector_matches(sel: &LabelSelector, labels: &[Label]) -> bool {
    sel.match_labels
        .iter()
        .all(|l| get(labels, &l.key) == Some(l.value.as_str()))
        && sel
            .match_expressions
            .iter()
            .all(|r| requirement_matches(r, labels))
}

/// Whether a node selector term matches a node. A term with no requirement
/// matches nothing, as upstream.
pub fn node_selector_term_matches(
    term: &NodeSelectorTerm,
    node_labels: &[Label],
    node_name: &str,
) -> bool {
    if term.match_expressions.is_empty() && term.match_fields.is_empty() {
        return false;
    }
    let fields = [Label {
        key: "metadata.name".into(),
        value: node_name.into(),
    }];
    term.match_expressions
        .iter()
        .all(|r| requirement_matches(r, node_labels))
        && term
            .match_fields
            .iter()
            .all(|r| requirement_matches(r, &fields))
}

/// Whether a node matches a `nodeSelector` map (every pair present).
pub fn node_selector_matches(selector: &[Label], node_labels: &[Label]) -> bool {
    selector
        .iter()
        .all(|l| get(node_labels, &l.key) == Some(l.value.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(k: &str, v: &str) -> Label {
        Label {
            key: k.into(),
            value: v.into(),
        }
    }
    fn r(k: &str, op: SelectorOperator, vs: &[&str]) -> Requirement {
        Requirement {
            key: k.into(),
            operator: op,
            values: vs.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn operators() {
        let labels = [l("zone", "a"), l("gen", "5")];
        assert!(requirement_matches(
            &r("zone", SelectorOperator::In, &["a", "b"]),
            &labels
        ));
        assert!(!requirement_matches(
            &r("zone", SelectorOperator::NotIn, &["a"]),
            &labels
        ));
        assert!(requirement_matches(
            &r("x", SelectorOperator::NotIn, &["a"]),
            &labels
        ));
        assert!(requirement_matches(
            &r("zone", SelectorOperator::Exists, &[]),
            &labels
        ));
        assert!(requirement_matches(
            &r("x", SelectorOperator::DoesNotExist, &[]),
            &labels
        ));
        assert!(requirement_matches(
            &r("gen", SelectorOperator::Gt, &["4"]),
            &labels
        ));
        assert!(!requirement_matches(
            &r("gen", SelectorOperator::Lt, &["5"]),
            &labels
        ));
        assert!(!requirement_matches(
            &r("zone", SelectorOperator::Gt, &["1"]),
            &labels
        ));
    }

    #[test]
    fn selectors_and_terms() {
        let labels = [l("app", "web"), l("tier", "front")];
        let sel = LabelSelector {
            match_labels: vec![l("app", "web")],
            match_expressions: vec![r("tier", SelectorOperator::In, &["front"])],
        };
        assert!(selector_matches(&sel, &labels));
        assert!(selector_matches(
            &LabelSelector {
                match_labels: vec![],
                match_expressions: vec![]
            },
            &labels
        ));
        let term = NodeSelectorTerm {
            match_expressions: vec![],
            match_fields: vec![r("metadata.name", SelectorOperator::In, &["n1"])],
        };
        assert!(node_selector_term_matches(&term, &labels, "n1"));
        assert!(!node_selector_term_matches(&term, &labels, "n2"));
        let empty = NodeSelectorTerm {
            match_expressions: vec![],
            match_fields: vec![],
        };
        assert!(!node_selector_term_matches(&empty, &labels, "n1"));
    }
}
