//! Taints and tolerations, with Kubernetes' matching rules.

use crate::{Taint, TaintEffect, Toleration, TolerationOperator};

/// Whether `toleration` tolerates `taint`: same effect (or any when the
/// toleration has none), and key/value matching per its operator. An empty key
/// with `Exists` tolerates everything.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect {
        if effect != taint.effect {
            return false;
        }
    }
    if !toleration.key.is_empty() && toleration.key != taint.key {
        return false;
    }
    match toleration.operator {
        TolerationOperator::Exists => true,
        TolerationOperator::Equal => toleration.value == taint.value,
    }
}

/// The first taint with one of `effects` that no toleration tolerates.
pub fn first_untolerated<'a>(
    taints: &'a [Taint],
    tolerations: &[Toleration],
    effects: &[TaintEffect],
) -> Option<&'a Taint> {
    taints
        .iter()
        .filter(|t| effects.contains(&t.effect))
        .find(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(k: &str, v: &str, e: TaintEffect) -> Taint {
        Taint {
            key: k.into(),
            value: v.into(),
            effect: e,
        }
    }
    fn tol(k: &str, op: TolerationOperator, v: &str, e: Option<TaintEffect>) -> Toleration {
        Toleration {
            key: k.into(),
            operator: op,
            value: v.into(),
            effect: e,
            toleration_seconds: None,
        }
    }

    #[test]
    fn matching_rules() {
        let t = taint("dedicated", "gpu", TaintEffect::NoSchedule);
        assert!(tolerates(
            &tol("dedicated", TolerationOperator::Equal, "gpu", None),
            &t
        ));
        assert!(!tolerates(
            &tol("dedicated", TolerationOperator::Equal, "cpu", None),
            &t
        ));
        assert!(tolerates(
            &tol(
                "dedicated",
                TolerationOperator::Exists,
                "",
                Some(TaintEffect::NoSchedule)
            ),
            &t
        ));
        assert!(!tolerates(
            &tol(
                "dedicated",
                TolerationOperator::Exists,
                "",
                Some(TaintEffect::NoExecute)
            ),
            &t
        ));
        assert!(tolerates(
            &tol("", TolerationOperator::Exists, "", None),
            &t
        ));
        assert!(!tolerates(
            &tol("other", TolerationOperator::Exists, "", None),
            &t
        ));
    }

    #[test]
    fn finds_untolerated_by_effect() {
        let taints = [
            taint("a", "", TaintEffect::PreferNoSchedule),
            taint("b", "", TaintEffect::NoSchedule),
        ];
        let none: [Toleration; 0] = [];
        assert_eq!(
            first_untolerated(
                &taints,
                &none,
                &[TaintEffect::NoSchedule, TaintEffect::NoExecute]
            )
            .unwrap()
            .key,
            "b"
        );
        let tols = [tol("b", TolerationOperator::Exists, "", None)];
        assert!(first_untolerated(&taints, &tols, &[TaintEffect::NoSchedule]).is_none());
    }
}
