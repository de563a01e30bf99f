//! Upstream's constraint checks (`minConstraint`, `maxConstraint`,
//! `maxRequestConstraint`, `limitRequestRatioConstraint`) with their exact
//! messages, and `utilerrors.NewAggregate`'s way of joining them.

use crate::limits::ResourceList;
use crate::quantity::{Quantity, MAX_MILLI_VALUE};

/// Upstream's `requestLimitEnforcedValues`: compare in milli-units unless a
/// value would overflow them. A missing quantity counts as zero.
fn enforced_values(
    request: Option<&Quantity>,
    limit: Option<&Quantity>,
    enforced: &Quantity,
) -> (i64, i64, i64) {
    let (r, l) = (
        request.unwrap_or(&Quantity::ZERO),
        limit.unwrap_or(&Quantity::ZERO),
    );
    let (rv, lv, ev) = (r.value(), l.value(), enforced.value());
    if rv <= MAX_MILLI_VALUE && lv <= MAX_MILLI_VALUE && ev <= MAX_MILLI_VALUE {
        (r.milli_value(), l.milli_value(), enforced.milli_value())
    } else {
        (rv, lv, ev)
    }
}

/// `min`: the request must be set and at least `enforced`; a set limit too.
pub fn min(
    kind: &str,
    name: &str,
    enforced: &Quantity,
    requests: &ResourceList,
    limits: &ResourceList,
) -> Result<(), String> {
    let (req, lim) = (requests.get(name), limits.get(name));
    let (r, l, e) = enforced_values(req, lim, enforced);
    let Some(req) = req else {
        return Err(format!(
            "minimum {name} usage per {kind} is {enforced}.  No request is specified"
        ));
    };
    if r < e {
        return Err(format!(
            "minimum {name} usage per {kind} is {enforced}, but request is {req}"
        ));
    }
    if let Some(lim) = lim {
        if l < e {
            return Err(format!(
                "minimum {name} usage per {kind} is {enforced}, but limit is {lim}"
            ));
        }
    }
    Ok(())
}

/// `max` for pods and containers: the limit must be set and at most
/// `enforced`; a set request too.
pub fn max(
    kind: &str,
    name: &str,
    enforced: &Quantity,
    requests: &ResourceList,
    limits: &ResourceList,
) -> Result<(), String> {
    let (req, lim) = (requests.get(name), limits.get(name));
    let (r, l, e) = enforced_values(req, lim, enforced);
    let Some(lim) = lim else {
        return Err(format!(
            "maximum {name} usage per {kind} is {enforced}.  No limit is specified"
        ));
    };
    if l > e {
        return Err(format!(
            "maximum {name} usage per {kind} is {enforced}, but limit is {lim}"
        ));
    }
    if let Some(req) = req {
        if r > e {
            return Err(format!(
                "maximum {name} usage per {kind} is {enforced}, but request is {req}"
            ));
        }
    }
    Ok(())
}

/// `max` for PVCs, which have only requests.
pub fn max_request(
    kind: &str,
    name: &str,
    enforced: &Quantity,
    requests: &ResourceList,
) -> Result<(), String> {
    let req = requests.get(name);
    let (r, _, e) = enforced_values(req, None, enforced);
    let Some(req) = req else {
        return Err(format!(
            "maximum {name} usage per {kind} is {enforced}.  No request is specified"
        ));
    };
    if r > e {
        return Err(format!(
            "maximum {name} usage per {kind} is {enforced}, but request is {req}"
        ));
    }
    Ok(())
}

/// `maxLimitRequestRatio`: limit / request must not exceed `enforced`; both
/// must be set and non-zero.
pub fn ratio(
    kind: &str,
    name: &str,
    enforced: &Quantity,
    requests: &ResourceList,
    limits: &ResourceList,
) -> Result<(), String> {
    let (req, lim) = (requests.get(name), limits.get(name));
    let (r, l, _) = enforced_values(req, lim, enforced);
    if req.is_none() || r == 0 {
        return Err(format!(
            "{name} max limit to request ratio per {kind} is {enforced}, but no request is specified or request is 0"
        ));
    }
    if lim.is_none() || l == 0 {
        return Err(format!(
            "{name} max limit to request ratio per {kind} is {enforced}, but no limit is specified or limit is 0"
        ));
    }
    let shown = l as f64 / r as f64;
    let (mut observed, mut allowed) = (shown, enforced.value() as f64);
    if enforced.value() <= MAX_MILLI_VALUE {
        observed *= 1000.0;
        allowed = enforced.milli_value() as f64;
    }
    if observed > allowed {
        // Go's %f: six decimals.
        return Err(format!(
            "{name} max limit to request ratio per {kind} is {enforced}, but provided ratio is {shown:.6}"
        ));
    }
    Ok(())
}

/// Upstream's `utilerrors.NewAggregate(errs).Error()`: duplicates dropped,
/// one message plain, several as `[a, b]`. `None` when there are none.
pub fn aggregate(errs: &[String]) -> Option<String> {
    let mut seen: Vec<&str> = Vec::new();
    for e in errs {
        if !seen.contains(&e.as_str()) {
            seen.push(e);
        }
    }
    match seen.len() {
        0 => None,
        1 => Some(seen[0].to_string()),
        _ => Some(format!("[{}]", seen.join(", "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(pairs: &[(&str, &str)]) -> ResourceList {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Quantity::parse(v).unwrap()))
            .collect()
    }

    #[test]
    fn messages_are_upstreams() {
        let q = |s: &str| Quantity::parse(s).unwrap();
        assert_eq!(
            ratio(
                "Container",
                "cpu",
                &q("2"),
                &list(&[("cpu", "250m")]),
                &list(&[("cpu", "1")])
            )
            .unwrap_err(),
            "cpu max limit to request ratio per Container is 2, but provided ratio is 4.000000"
        );
        assert!(ratio(
            "Container",
            "cpu",
            &q("2"),
            &list(&[("cpu", "500m")]),
            &list(&[("cpu", "1")])
        )
        .is_ok());
        assert_eq!(
            min("Container", "cpu", &q("100m"), &list(&[]), &list(&[])).unwrap_err(),
            "minimum cpu usage per Container is 100m.  No request is specified"
        );
        assert_eq!(
            max_request(
                "PersistentVolumeClaim",
                "storage",
                &q("10Gi"),
                &list(&[("storage", "20Gi")])
            )
            .unwrap_err(),
            "maximum storage usage per PersistentVolumeClaim is 10Gi, but request is 20Gi"
        );
    }

    #[test]
    fn aggregate_like_upstream() {
        assert_eq!(aggregate(&[]), None);
        assert_eq!(aggregate(&["a".into(), "a".into()]).unwrap(), "a");
        assert_eq!(
            aggregate(&["a".into(), "b".into(), "a".into()]).unwrap(),
            "[a, b]"
        );
    }
}
