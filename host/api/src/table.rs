//! Server-side printing: `meta.k8s.io/v1` Table responses, so `kubectl get`
//! shows the same columns as against a real cluster. Columns and cell logic
//! follow upstream's `pkg/printers/internalversion/printers.go`; like the
//! upstream server, every row carries the wide (priority 1) cells too and
//! kubectl hides them unless asked for `-o wide`.
//!
//! ```
//! use trellis_api::{registry, table};
//! use serde_json::json;
//!
//! let pods = registry::by_kind("", "Pod").unwrap();
//! let pod = json!({"metadata": {"name": "web", "creationTimestamp": "2024-01-01T00:00:00Z"},
//!                  "spec": {"containers": [{"name": "web"}]}, "status": {"phase": "Pending"}});
//! let now = 1_704_067_200 + 330; // 5m30s later
//! let t = table::table(pods, &[pod], now, table::IncludeObject::Metadata, json!({}));
//! assert_eq!(t["rows"][0]["cells"], json!(["web", "0/1", "Pending", "0", "5m30s", "<none>", "<none>", "<none>", "<none>"]));
//! ```

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use crate::registry::Kind;
use crate::selectors::LabelSelector;

/// Why table options were refused (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// The `includeObject` query parameter was not None, Metadata or Object.
    #[error("includeObject: Invalid value: {0:?}: must be 'Metadata', 'Object', 'None', or empty")]
    InvalidIncludeObject(String),
}

/// What each row's `object` carries (the `includeObject` query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    /// No object.
    None,
    /// A `PartialObjectMetadata` with the object's metadata (the default).
    #[default]
    Metadata,
    /// The whole object.
    Object,
}

impl IncludeObject {
    /// Reads the `includeObject` query parameter; absent or empty means Metadata.
    pub fn from_query(value: Option<&str>) -> Result<Self, TableError> {
        match value.unwrap_or("") {
            "" | "Metadata" => Ok(IncludeObject::Metadata),
            "None" => Ok(IncludeObject::None),
            "Object" => Ok(IncludeObject::Object),
            other => Err(TableError::InvalidIncludeObject(other.to_string())),
        }
    }
}

/// True when the `Accept` header's preferred media type asks for a Table
/// (`application/json;as=Table;v=v1;g=meta.k8s.io`, or `v=v1beta1`).
pub fn is_table_request(accept: &str) -> bool {
    table_api_version(accept).is_some()
}

/// The Table `apiVersion` the client prefers (`meta.k8s.io/v1` or
/// `meta.k8s.io/v1beta1`), or None when the preferred media type is not a
/// Table. Media ranges are taken by descending `q`, then in order.
pub fn table_api_version(accept: &str) -> Option<&'static str> {
    let mut ranges: Vec<(f32, usize, &str)> = accept
        .split(',')
        .enumerate()
        .filter(|(_, r)| !r.trim().is_empty())
        .map(|(i, r)| {
            let q = media_params(r)
                .find(|(k, _)| *k == "q")
                .and_then(|(_, v)| v.parse::<f32>().ok())
                .unwrap_or(1.0);
            (q, i, r)
        })
        .collect();
    ranges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    for (q, _, range) in ranges {
        if q <= 0.0 {
            continue;
        }
        let media = range
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let param = |name: &str| {
            media_params(range)
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v)
        };
        match param("as") {
            Some("Table") => {
                if media != "application/json" && media != "application/yaml" {
                    continue;
                }
                if param("g") != Some("meta.k8s.io") {
                    continue;
                }
                match param("v") {
                    Some("v1") => return Some("meta.k8s.io/v1"),
                    Some("v1beta1") => return Some("meta.k8s.io/v1beta1"),
                    _ => continue,
                }
            }
            // Another transformation (e.g. PartialObjectMetadataList) is
            // preferred: not a Table.
            Some(_) => return None,
            None => {
                if matches!(
                    media.as_str(),
                    "application/json" | "application/yaml" | "application/*" | "*/*"
                ) {
                    return None;
                }
            }
        }
    }
    None
}

fn media_params(range: &str) -> impl Iterator<Item = (&str, &str)> {
    range.split(';').skip(1).filter_map(|p| {
        let (k, v) = p.split_once('=')?;
        Some((k.trim(), v.trim().trim_matches('"')))
    })
}

/// Builds the Table for `objects` of `kind`. `list_meta` becomes the Table's
/// `metadata` (`resourceVersion`, `continue`); `now_unix_secs` is the clock
/// ages are measured against.
pub fn table(
    kind: &Kind,
    objects: &[Value],
    now_unix_secs: i64,
    include_object: IncludeObject,
    list_meta: Value,
) -> Value {
    let printer = printer_for(kind);
    let columns: Vec<Value> = printer
        .columns
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.ty,
                "format": c.format,
                "description": c.description,
                "priority": c.priority,
            })
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|obj| {
            let (cells, conditions) = (printer.row)(obj, now_unix_secs);
            debug_assert_eq!(cells.len(), printer.columns.len(), "{}", kind.kind);
            let mut row = Map::new();
            row.insert("cells".into(), Value::Array(cells));
            if let Some(c) = conditions {
                row.insert("conditions".into(), c);
            }
            match include_object {
                IncludeObject::None => {}
                IncludeObject::Metadata => {
                    row.insert(
                        "object".into(),
                        json!({
                            "kind": "PartialObjectMetadata",
                            "apiVersion": "meta.k8s.io/v1",
                            "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
                        }),
                    );
                }
                IncludeObject::Object => {
                    row.insert("object".into(), obj.clone());
                }
            }
            Value::Object(row)
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": columns,
        "rows": rows,
    })
}

// ---------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------

/// kubectl's age of an object created at `created_rfc3339`, as
/// `k8s.io/apimachinery/pkg/util/duration.HumanDuration`: "45s", "5m30s",
/// "3h12m", "2d5h", "400d", "3y20d". "<unknown>" for an empty timestamp,
/// "<invalid>" for one that is unreadable or more than a second ahead.
pub fn age(created_rfc3339: &str, now_unix_secs: i64) -> String {
    if created_rfc3339.is_empty() {
        return "<unknown>".to_string();
    }
    match parse_rfc3339(created_rfc3339) {
        Some(t) => human_duration(now_unix_secs.saturating_sub(t)),
        None => "<invalid>".to_string(),
    }
}

/// `HumanDuration` for a whole number of seconds.
pub fn human_duration(seconds: i64) -> String {
    // A little clock skew between writers reads as "now".
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    if seconds < 0 {
        return "0s".to_string();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// Seconds since the Unix epoch of an RFC 3339 timestamp
/// (`2024-01-02T03:04:05Z`, optional fraction, `Z` or `±hh:mm`), rounded
/// down to the second.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        let part = s.get(from..to)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, min, sec) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || min > 59
        || sec > 59
    {
        return None;
    }
    let mut i = 19;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    let offset = match &s[i..] {
        "Z" | "z" => 0,
        tz if tz.len() == 6
            && matches!(tz.as_bytes()[0], b'+' | b'-')
            && tz.as_bytes()[3] == b':' =>
        {
            let (h, m) = (num(i + 1, i + 3)?, num(i + 4, i + 6)?);
            if h > 23 || m > 59 {
                return None;
            }
            let off = h * 3600 + m * 60;
            if tz.starts_with('-') {
                -off
            } else {
                off
            }
        }
        _ => return None,
    };
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + min * 60 + sec - offset)
}

/// `2024-01-02T03:04:05Z` for a Unix time, as Go's `Time.UTC().Format(time.RFC3339)`.
pub fn format_rfc3339(unix_secs: i64) -> String {
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

// ---------------------------------------------------------------------------
// Printers
// ---------------------------------------------------------------------------

struct Column {
    name: &'static str,
    ty: &'static str,
    format: &'static str,
    description: &'static str,
    priority: u8,
}

const fn col(name: &'static str, ty: &'static str, description: &'static str) -> Column {
    Column {
        name,
        ty,
        format: "",
        description,
        priority: 0,
    }
}

const fn wide(name: &'static str, ty: &'static str, description: &'static str) -> Column {
    Column {
        name,
        ty,
        format: "",
        description,
        priority: 1,
    }
}

const NAME: Column = Column {
    name: "Name",
    ty: "string",
    format: "name",
    description: "Name must be unique within a namespace. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
    priority: 0,
};
const AGE_DESC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is represented in RFC3339 form and is in UTC.";
const AGE: Column = col("Age", "string", AGE_DESC);
const CREATED_AT: Column = col("Created At", "date", AGE_DESC);
const CONTAINERS: Column = wide(
    "Containers",
    "string",
    "Names of each container in the template.",
);
const IMAGES: Column = wide(
    "Images",
    "string",
    "Images referenced by each container in the template.",
);
const SELECTOR: Column = wide("Selector", "string", "Label selector for pods.");

/// Cells of one row, and the row's conditions (pods only).
type Cells = (Vec<Value>, Option<Value>);

struct Printer {
    columns: &'static [Column],
    row: fn(&Value, i64) -> Cells,
}

fn printer_for(kind: &Kind) -> Printer {
    macro_rules! p {
        ($cols:expr, $row:expr) => {
            Printer {
                columns: const { $cols },
                row: $row,
            }
        };
    }
    match (kind.group, kind.kind) {
        ("", "Pod") => p!(POD_COLUMNS, pod_row),
        ("", "Node") => p!(NODE_COLUMNS, node_row),
        ("", "Namespace") => p!(
            &[NAME, col("Status", "string", "The status of the namespace"), AGE],
            |o, now| plain(vec![name(o), st(&o["status"]["phase"]), age_cell(o, now)])
        ),
        ("", "Service") => p!(SERVICE_COLUMNS, service_row),
        ("", "ConfigMap") => p!(
            &[NAME, col("Data", "string", "Number of data entries in the config map."), AGE],
            |o, now| {
                let n = obj_len(&o["data"]) + obj_len(&o["binaryData"]);
                plain(vec![name(o), json!(n), age_cell(o, now)])
            }
        ),
        ("", "Secret") => p!(
            &[
                NAME,
                col("Type", "string", "The type of the secret"),
                col("Data", "string", "The number of entries in the secret"),
                AGE
            ],
            |o, now| plain(vec![name(o), st(&o["type"]), json!(obj_len(&o["data"])), age_cell(o, now)])
        ),
        ("", "ServiceAccount") => p!(
            &[NAME, col("Secrets", "string", "The number of secrets of the service account."), AGE],
            |o, now| plain(vec![name(o), json!(arr(&o["secrets"]).len()), age_cell(o, now)])
        ),
        ("", "Endpoints") => p!(
            &[NAME, col("Endpoints", "string", "Endpoints of the service"), AGE],
            |o, now| plain(vec![name(o), json!(format_endpoints(o)), age_cell(o, now)])
        ),
        ("", "Event") => p!(EVENT_COLUMNS, event_row),
        ("", "ResourceQuota") => p!(
            &[
                NAME,
                AGE,
                col("Request", "string", "Request represents a minimum amount of cpu/memory that a container may consume."),
                col("Limit", "string", "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node."),
            ],
            resource_quota_row
        ),
        ("", "LimitRange") | ("rbac.authorization.k8s.io", "Role" | "ClusterRole") => {
            p!(&[NAME, CREATED_AT], |o, _| {
                let t = parse_rfc3339(meta_str(o, "creationTimestamp"))
                    .unwrap_or(GO_ZERO_TIME);
                plain(vec![name(o), json!(format_rfc3339(t))])
            })
        }
        ("", "PersistentVolume") => p!(PV_COLUMNS, pv_row),
        ("", "PersistentVolumeClaim") => p!(PVC_COLUMNS, pvc_row),
        ("apps", "Deployment") => p!(DEPLOYMENT_COLUMNS, deployment_row),
        ("apps", "ReplicaSet") => p!(REPLICASET_COLUMNS, replicaset_row),
        ("apps", "DaemonSet") => p!(DAEMONSET_COLUMNS, daemonset_row),
        ("apps", "StatefulSet") => p!(
            &[NAME, col("Ready", "string", "Number of the pod with ready state"), AGE, CONTAINERS, IMAGES],
            |o, now| {
                let ready = format!("{}/{}", int(&o["status"]["readyReplicas"]), replicas(o));
                let (c, i) = containers(&o["spec"]["template"]);
                plain(vec![name(o), json!(ready), age_cell(o, now), json!(c), json!(i)])
            }
        ),
        ("batch", "Job") => p!(JOB_COLUMNS, job_row),
        ("batch", "CronJob") => p!(CRONJOB_COLUMNS, cronjob_row),
        ("apps", "ControllerRevision") => p!(
            &[
                NAME,
                col("Controller", "string", "Controller of the object"),
                col("Revision", "number", "Revision of the ControllerRevision"),
                AGE
            ],
            |o, now| {
                use trellis_types::owners::{controller_ref, group_of};
                let owner = controller_ref(o)
                    .map(|r| {
                        let group = group_of(r["apiVersion"].as_str().unwrap_or(""));
                        let kind = r["kind"].as_str().unwrap_or("").to_lowercase();
                        let kind = if group.is_empty() { kind } else { format!("{kind}.{group}") };
                        format!("{kind}/{}", r["name"].as_str().unwrap_or(""))
                    })
                    .unwrap_or_else(|| "<none>".into());
                plain(vec![name(o), json!(owner), o["revision"].clone(), age_cell(o, now)])
            }
        ),
        ("scheduling.k8s.io", "PriorityClass") => p!(
            &[
                NAME,
                col("Value", "integer", "Value is the integer value of this priority class."),
                col("Global-Default", "boolean", "globalDefault indicates that the value of this PriorityClass should be used for pods without a PriorityClassName."),
                AGE,
                col("PreemptionPolicy", "string", "PreemptionPolicy is the Policy for preempting pods with lower priority."),
            ],
            |o, now| plain(vec![
                name(o),
                o["value"].clone(),
                json!(o["globalDefault"].as_bool().unwrap_or(false)),
                age_cell(o, now),
                st(&o["preemptionPolicy"]),
            ])
        ),
        ("coordination.k8s.io", "Lease") => p!(
            &[NAME, col("Holder", "string", "The holder of the lease"), AGE],
            |o, now| plain(vec![name(o), st(&o["spec"]["holderIdentity"]), age_cell(o, now)])
        ),
        ("autoscaling", "HorizontalPodAutoscaler") => p!(HPA_COLUMNS, hpa_row),
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            p!(BINDING_COLUMNS, binding_row)
        }
        ("discovery.k8s.io", "EndpointSlice") => p!(
            &[
                NAME,
                col("AddressType", "string", "Type of address carried by this EndpointSlice"),
                col("Ports", "string", "Ports of the endpoints"),
                col("Endpoints", "string", "Addresses of the endpoints"),
                AGE
            ],
            endpoint_slice_row
        ),
        // As a CRD's additionalPrinterColumns would show them.
        ("trellis.dev", "Plugin") => p!(
            &[
                NAME,
                col("Role", "string", "What the plugin is for"),
                col("Ready", "string", "Whether the component loaded"),
                col("Digest", "string", "sha256 of the component"),
                AGE
            ],
            |o, now| {
                let digest = s(&o["status"]["digest"]);
                let short = digest.get(..19).unwrap_or(digest);
                plain(vec![name(o), st(&o["spec"]["role"]), st(&o["status"]["conditions"][0]["status"]), json!(short), age_cell(o, now)])
            }
        ),
        ("trellis.dev", "SchedulerProfile" | "AdmissionChain") => p!(
            &[
                NAME,
                col("Ready", "string", "Whether the chain is active"),
                col("Plugins", "integer", "Plugins in the chain"),
                AGE
            ],
            |o, now| {
                let n = o["spec"]["plugins"].as_array().map_or(0, Vec::len);
                plain(vec![name(o), st(&o["status"]["conditions"][0]["status"]), json!(n), age_cell(o, now)])
            }
        ),
        // Custom-resource-like kinds: upstream's default Name and Age columns.
        _ => p!(&[NAME, col("Age", "date", AGE_DESC)], |o, now| plain(vec![
            name(o),
            age_cell(o, now)
        ])),
    }
}

/// Go's zero `time.Time`, which is what upstream prints for a missing
/// creation timestamp in "Created At" columns (0001-01-01T00:00:00Z).
const GO_ZERO_TIME: i64 = -62_135_596_800;

fn plain(cells: Vec<Value>) -> Cells {
    (cells, None)
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

fn st(v: &Value) -> Value {
    json!(s(v))
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn arr(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn obj_len(v: &Value) -> usize {
    v.as_object().map(Map::len).unwrap_or(0)
}

/// A quantity as written (`"10Gi"`); numbers are accepted for hand-written objects.
fn quantity(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

fn or(s: &str, default: &str) -> String {
    if s.is_empty() {
        default.to_string()
    } else {
        s.to_string()
    }
}

fn meta_str<'a>(o: &'a Value, field: &str) -> &'a str {
    s(&o["metadata"][field])
}

fn name(o: &Value) -> Value {
    json!(meta_str(o, "name"))
}

fn age_cell(o: &Value, now: i64) -> Value {
    json!(age(meta_str(o, "creationTimestamp"), now))
}

fn since(ts: &Value, now: i64) -> String {
    age(s(ts), now)
}

fn is_deleting(o: &Value) -> bool {
    !o["metadata"]["deletionTimestamp"].is_null()
}

/// `labels.FormatLabels`: sorted `k=v` pairs, "<none>" when empty.
fn format_labels(v: &Value) -> String {
    let Some(m) = v.as_object().filter(|m| !m.is_empty()) else {
        return "<none>".to_string();
    };
    let mut pairs: Vec<String> = m.iter().map(|(k, v)| format!("{k}={}", s(v))).collect();
    pairs.sort();
    pairs.join(",")
}

/// A `metav1.LabelSelector` in selector syntax, "<invalid>" if it cannot be
/// converted (as upstream's workload printers).
fn selector_string(v: &Value) -> String {
    if v.is_null() {
        return String::new();
    }
    match LabelSelector::from_label_selector(v) {
        Ok(sel) => sel.to_string(),
        Err(_) => "<invalid>".to_string(),
    }
}

/// Comma-joined container names and images of a pod template.
fn containers(template: &Value) -> (String, String) {
    let cs = arr(&template["spec"]["containers"]);
    let names: Vec<&str> = cs.iter().map(|c| s(&c["name"])).collect();
    let images: Vec<&str> = cs.iter().map(|c| s(&c["image"])).collect();
    (names.join(","), images.join(","))
}

/// `spec.replicas`, which the API defaults to 1 when unset.
fn replicas(o: &Value) -> i64 {
    o["spec"]["replicas"].as_i64().unwrap_or(1)
}

fn condition_true(conditions: &Value, ty: &str) -> bool {
    arr(conditions)
        .iter()
        .any(|c| s(&c["type"]) == ty && s(&c["status"]) == "True")
}

// --- Pod -------------------------------------------------------------------

const POD_COLUMNS: &[Column] = &[
    NAME,
    col("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
    col("Status", "string", "The aggregate status of the containers in this pod."),
    col("Restarts", "string", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
    AGE,
    wide("IP", "string", "IP address allocated to the pod. Routable at least within the cluster."),
    wide("Node", "string", "NodeName indicates in which node this pod is scheduled."),
    wide("Nominated Node", "string", "nominatedNodeName is set when this pod preempts other pods on the node."),
    wide("Readiness Gates", "string", "If specified, all readiness gates will be evaluated for pod readiness."),
];

fn pod_row(pod: &Value, now: i64) -> Cells {
    let spec = &pod["spec"];
    let status = &pod["status"];
    let init_specs = arr(&spec["initContainers"]);
    let restartable = |name: &str| {
        init_specs
            .iter()
            .any(|c| s(&c["name"]) == name && s(&c["restartPolicy"]) == "Always")
    };
    let total = arr(&spec["containers"]).len()
        + init_specs
            .iter()
            .filter(|c| s(&c["restartPolicy"]) == "Always")
            .count();
    let mut ready = 0usize;
    let mut restarts = 0i64;
    let mut sidecar_restarts = 0i64;
    let mut last_restart: Option<i64> = None;
    let mut last_sidecar_restart: Option<i64> = None;
    let last_terminated = |c: &Value| parse_rfc3339(s(&c["lastState"]["terminated"]["finishedAt"]));

    let phase = s(&status["phase"]);
    let mut reason = or(s(&status["reason"]), phase);
    if arr(&status["conditions"])
        .iter()
        .any(|c| s(&c["type"]) == "PodScheduled" && s(&c["reason"]) == "SchedulingGated")
    {
        reason = "SchedulingGated".to_string();
    }
    let conditions = match phase {
        "Succeeded" => Some(
            json!([{"type": "Completed", "status": "True", "reason": "Succeeded", "message": "The pod has completed successfully."}]),
        ),
        "Failed" => Some(
            json!([{"type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed."}]),
        ),
        _ => None,
    };

    let mut initializing = false;
    for (i, c) in arr(&status["initContainerStatuses"]).iter().enumerate() {
        let count = int(&c["restartCount"]);
        restarts += count;
        let finished = last_terminated(c);
        last_restart = last_restart.max(finished);
        let sidecar = restartable(s(&c["name"]));
        if sidecar {
            sidecar_restarts += count;
            last_sidecar_restart = last_sidecar_restart.max(finished);
        }
        let term = &c["state"]["terminated"];
        let waiting_reason = s(&c["state"]["waiting"]["reason"]);
        if term.is_object() && int(&term["exitCode"]) == 0 {
            continue;
        }
        if sidecar && c["started"].as_bool() == Some(true) {
            if c["ready"].as_bool() == Some(true) {
                ready += 1;
            }
            continue;
        }
        reason = if term.is_object() {
            match (s(&term["reason"]), int(&term["signal"])) {
                ("", 0) => format!("Init:ExitCode:{}", int(&term["exitCode"])),
                ("", sig) => format!("Init:Signal:{sig}"),
                (r, _) => format!("Init:{r}"),
            }
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            format!("Init:{waiting_reason}")
        } else {
            format!("Init:{i}/{}", init_specs.len())
        };
        initializing = true;
        break;
    }

    if !initializing || condition_true(&status["conditions"], "Initialized") {
        restarts = sidecar_restarts;
        last_restart = last_sidecar_restart;
        let mut has_running = false;
        for c in arr(&status["containerStatuses"]).iter().rev() {
            restarts += int(&c["restartCount"]);
            last_restart = last_restart.max(last_terminated(c));
            let state = &c["state"];
            let term = &state["terminated"];
            let waiting_reason = s(&state["waiting"]["reason"]);
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if term.is_object() {
                reason = match (s(&term["reason"]), int(&term["signal"])) {
                    ("", 0) => format!("ExitCode:{}", int(&term["exitCode"])),
                    ("", sig) => format!("Signal:{sig}"),
                    (r, _) => r.to_string(),
                };
            } else if c["ready"].as_bool() == Some(true) && state["running"].is_object() {
                has_running = true;
                ready += 1;
            }
        }
        // A sidecar or second container may still run after one completed.
        if reason == "Completed" && has_running {
            reason = if condition_true(&status["conditions"], "Ready") {
                "Running".to_string()
            } else {
                "NotReady".to_string()
            };
        }
    }

    if is_deleting(pod) && s(&status["reason"]) == "NodeLost" {
        reason = "Unknown".to_string();
    } else if is_deleting(pod) && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".to_string();
    }

    let restarts_cell = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", human_duration(now - t)),
        _ => restarts.to_string(),
    };

    let ip = status["podIPs"][0]["ip"]
        .as_str()
        .filter(|ip| !ip.is_empty())
        .unwrap_or_else(|| s(&status["podIP"]));
    let gates = arr(&spec["readinessGates"]);
    let gates_cell = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let conds = arr(&status["conditions"]);
        let true_count = gates
            .iter()
            .filter(|g| {
                conds
                    .iter()
                    .find(|c| c["type"] == g["conditionType"])
                    .is_some_and(|c| s(&c["status"]) == "True")
            })
            .count();
        format!("{true_count}/{}", gates.len())
    };
    let cells = vec![
        name(pod),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_cell),
        age_cell(pod, now),
        json!(or(ip, "<none>")),
        json!(or(s(&spec["nodeName"]), "<none>")),
        json!(or(s(&status["nominatedNodeName"]), "<none>")),
        json!(gates_cell),
    ];
    (cells, conditions)
}

// --- Node ------------------------------------------------------------------

const NODE_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", "The status of the node"),
    col("Roles", "string", "The roles of the node"),
    AGE,
    col("Version", "string", "Kubelet Version reported by the node."),
    wide("Internal-IP", "string", "List of addresses reachable to the node."),
    wide("External-IP", "string", "List of addresses reachable to the node."),
    wide("OS-Image", "string", "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy))."),
    wide("Kernel-Version", "string", "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64)."),
    wide("Container-Runtime", "string", "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2)."),
];

fn node_row(node: &Value, now: i64) -> Cells {
    let status = &node["status"];
    // The last Ready condition wins, as upstream's condition map.
    let ready = arr(&status["conditions"])
        .iter()
        .rev()
        .find(|c| s(&c["type"]) == "Ready");
    let mut parts = vec![match ready {
        Some(c) if s(&c["status"]) == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if node["spec"]["unschedulable"].as_bool() == Some(true) {
        parts.push("SchedulingDisabled");
    }
    let roles = node_roles(&node["metadata"]["labels"]);
    let roles = if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.join(",")
    };
    let address = |ty: &str| {
        arr(&status["addresses"])
            .iter()
            .find(|a| s(&a["type"]) == ty)
            .map(|a| s(&a["address"]).to_string())
            .unwrap_or_else(|| "<none>".to_string())
    };
    let info = &status["nodeInfo"];
    plain(vec![
        name(node),
        json!(parts.join(",")),
        json!(roles),
        age_cell(node, now),
        st(&info["kubeletVersion"]),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(or(s(&info["osImage"]), "<unknown>")),
        json!(or(s(&info["kernelVersion"]), "<unknown>")),
        json!(or(s(&info["containerRuntimeVersion"]), "<unknown>")),
    ])
}

/// Roles from `node-role.kubernetes.io/<role>` labels and the older
/// `kubernetes.io/role=<role>`, sorted and deduplicated.
fn node_roles(labels: &Value) -> Vec<String> {
    let mut roles = BTreeSet::new();
    if let Some(m) = labels.as_object() {
        for (k, v) in m {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.insert(role.to_string());
                }
            } else if k == "kubernetes.io/role" && !s(v).is_empty() {
                roles.insert(s(v).to_string());
            }
        }
    }
    roles.into_iter().collect()
}

// --- Service, Endpoints, EndpointSlice -------------------------------------

const SERVICE_COLUMNS: &[Column] = &[
    NAME,
    col("Type", "string", "type determines how the Service is exposed."),
    col("Cluster-IP", "string", "clusterIP is the IP address of the service."),
    col("External-IP", "string", "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service."),
    col("Port(s)", "string", "The list of ports that are exposed by this service."),
    AGE,
    wide("Selector", "string", "Route service traffic to pods with label keys and values matching this selector."),
];

fn service_row(svc: &Value, now: i64) -> Cells {
    let spec = &svc["spec"];
    // Unset type and protocol are the API defaults.
    let ty = or(s(&spec["type"]), "ClusterIP");
    let cluster_ip = spec["clusterIPs"][0]
        .as_str()
        .filter(|ip| !ip.is_empty())
        .unwrap_or_else(|| s(&spec["clusterIP"]));
    let ports = service_ports(&spec["ports"]);
    plain(vec![
        name(svc),
        json!(ty),
        json!(or(cluster_ip, "<none>")),
        json!(service_external_ip(svc, &ty)),
        json!(or(&ports, "<none>")),
        age_cell(svc, now),
        json!(format_labels(&spec["selector"])),
    ])
}

/// "80/TCP,443:30443/TCP"
fn service_ports(ports: &Value) -> String {
    arr(ports)
        .iter()
        .map(|p| {
            let proto = or(s(&p["protocol"]), "TCP");
            match int(&p["nodePort"]) {
                0 => format!("{}/{proto}", int(&p["port"])),
                node => format!("{}:{node}/{proto}", int(&p["port"])),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn service_external_ip(svc: &Value, ty: &str) -> String {
    let external: Vec<&str> = arr(&svc["spec"]["externalIPs"]).iter().map(s).collect();
    match ty {
        "ClusterIP" | "NodePort" => or(&external.join(","), "<none>"),
        "LoadBalancer" => {
            let lb: BTreeSet<&str> = arr(&svc["status"]["loadBalancer"]["ingress"])
                .iter()
                .filter_map(|i| {
                    [s(&i["ip"]), s(&i["hostname"])]
                        .into_iter()
                        .find(|x| !x.is_empty())
                })
                .collect();
            let mut all: Vec<&str> = lb.into_iter().collect();
            all.extend(external);
            or(&all.join(","), "<pending>")
        }
        "ExternalName" => s(&svc["spec"]["externalName"]).to_string(),
        _ => "<unknown>".to_string(),
    }
}

/// `net.JoinHostPort`: IPv6 addresses get brackets.
fn host_port(ip: &str, port: i64) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// The first three endpoints and how many more, as upstream's `formatEndpoints`.
fn format_endpoints(ep: &Value) -> String {
    let subsets = arr(&ep["subsets"]);
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    const MAX: usize = 3;
    let mut list = Vec::new();
    let mut count = 0;
    let mut more = false;
    for ss in subsets {
        let addrs = arr(&ss["addresses"]);
        let ports = arr(&ss["ports"]);
        if ports.is_empty() {
            // Headless services may have no ports.
            count += addrs.len();
            for a in addrs {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(s(&a["ip"]).to_string());
            }
            continue;
        }
        for p in ports {
            count += addrs.len();
            for a in addrs {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(host_port(s(&a["ip"]), int(&p["port"])));
            }
        }
    }
    let ret = list.join(",");
    if more {
        format!("{ret} + {} more...", count - MAX)
    } else {
        ret
    }
}

/// Upstream's `listWithMoreString` over the first three items.
fn list_with_more(items: impl Iterator<Item = String>) -> String {
    const MAX: usize = 3;
    let all: Vec<String> = items.collect();
    if all.len() > MAX {
        format!("{} + {} more...", all[..MAX].join(","), all.len() - MAX)
    } else if all.is_empty() {
        "<unset>".to_string()
    } else {
        all.join(",")
    }
}

fn endpoint_slice_row(o: &Value, now: i64) -> Cells {
    let ports = arr(&o["ports"]).iter().map(|p| {
        if let Some(n) = p["port"].as_i64() {
            n.to_string()
        } else if let Some(n) = p["name"].as_str() {
            n.to_string()
        } else {
            "*".to_string()
        }
    });
    let endpoints = arr(&o["endpoints"])
        .iter()
        .flat_map(|e| arr(&e["addresses"]).iter().map(|a| s(a).to_string()));
    plain(vec![
        name(o),
        st(&o["addressType"]),
        json!(list_with_more(ports)),
        json!(list_with_more(endpoints)),
        age_cell(o, now),
    ])
}

// --- Event -----------------------------------------------------------------

const EVENT_COLUMNS: &[Column] = &[
    col("Last Seen", "string", "The time at which the most recent occurrence of this event was recorded."),
    col("Type", "string", "Type of this event (Normal, Warning), new types could be added in the future"),
    col("Reason", "string", "This should be a short, machine understandable string that gives the reason for the transition into the object's current status."),
    col("Object", "string", "The object that this event is about."),
    wide("Subobject", "string", "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement."),
    wide("Source", "string", "The component reporting this event."),
    col("Message", "string", "A human-readable description of the status of this operation."),
    wide("First Seen", "string", "The time at which the event was first recorded."),
    wide("Count", "string", "The number of times this event has occurred."),
    Column {
        priority: 1,
        ..NAME
    },
];

fn event_row(ev: &Value, now: i64) -> Cells {
    let first_ts = s(&ev["firstTimestamp"]);
    let first = if first_ts.is_empty() {
        since(&ev["eventTime"], now)
    } else {
        age(first_ts, now)
    };
    let mut last = if s(&ev["lastTimestamp"]).is_empty() {
        first.clone()
    } else {
        since(&ev["lastTimestamp"], now)
    };
    let mut count = int(&ev["count"]);
    if ev["series"].is_object() {
        last = since(&ev["series"]["lastObservedTime"], now);
        count = int(&ev["series"]["count"]);
    } else if count == 0 {
        // Events written through events.k8s.io carry no count.
        count = 1;
    }
    let io = &ev["involvedObject"];
    let kind = s(&io["kind"]).to_lowercase();
    let target = match s(&io["name"]) {
        "" => kind,
        n => format!("{kind}/{n}"),
    };
    let component = or(s(&ev["source"]["component"]), s(&ev["reportingComponent"]));
    let instance = or(s(&ev["source"]["host"]), s(&ev["reportingInstance"]));
    let source = if instance.is_empty() {
        component
    } else {
        format!("{component}, {instance}")
    };
    plain(vec![
        json!(last),
        st(&ev["type"]),
        st(&ev["reason"]),
        json!(target),
        st(&io["fieldPath"]),
        json!(source),
        json!(s(&ev["message"]).trim()),
        json!(first),
        json!(count),
        name(ev),
    ])
}

// --- Workloads -------------------------------------------------------------

const DEPLOYMENT_COLUMNS: &[Column] = &[
    NAME,
    col("Ready", "string", "Number of the pod with ready state"),
    col("Up-to-date", "string", "Total number of non-terminated pods targeted by this deployment that have the desired template spec."),
    col("Available", "string", "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn deployment_row(o: &Value, now: i64) -> Cells {
    let status = &o["status"];
    let (c, i) = containers(&o["spec"]["template"]);
    plain(vec![
        name(o),
        json!(format!("{}/{}", int(&status["readyReplicas"]), replicas(o))),
        json!(int(&status["updatedReplicas"])),
        json!(int(&status["availableReplicas"])),
        age_cell(o, now),
        json!(c),
        json!(i),
        json!(selector_string(&o["spec"]["selector"])),
    ])
}

const REPLICASET_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Desired",
        "integer",
        "Replicas is the number of desired replicas.",
    ),
    col(
        "Current",
        "integer",
        "Replicas is the most recently observed number of replicas.",
    ),
    col(
        "Ready",
        "integer",
        "The number of ready replicas for this replica set.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn replicaset_row(o: &Value, now: i64) -> Cells {
    let status = &o["status"];
    let (c, i) = containers(&o["spec"]["template"]);
    plain(vec![
        name(o),
        json!(replicas(o)),
        json!(int(&status["replicas"])),
        json!(int(&status["readyReplicas"])),
        age_cell(o, now),
        json!(c),
        json!(i),
        json!(selector_string(&o["spec"]["selector"])),
    ])
}

const DAEMONSET_COLUMNS: &[Column] = &[
    NAME,
    col("Desired", "integer", "The total number of nodes that should be running the daemon pod."),
    col("Current", "integer", "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod."),
    col("Ready", "integer", "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready."),
    col("Up-to-date", "integer", "The total number of nodes that are running updated daemon pod"),
    col("Available", "integer", "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available."),
    col("Node Selector", "string", "NodeSelector is a selector which must be true for the pod to fit on a node."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn daemonset_row(o: &Value, now: i64) -> Cells {
    let status = &o["status"];
    let (c, i) = containers(&o["spec"]["template"]);
    plain(vec![
        name(o),
        json!(int(&status["desiredNumberScheduled"])),
        json!(int(&status["currentNumberScheduled"])),
        json!(int(&status["numberReady"])),
        json!(int(&status["updatedNumberScheduled"])),
        json!(int(&status["numberAvailable"])),
        json!(format_labels(
            &o["spec"]["template"]["spec"]["nodeSelector"]
        )),
        age_cell(o, now),
        json!(c),
        json!(i),
        json!(selector_string(&o["spec"]["selector"])),
    ])
}

const JOB_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", "Status of the job."),
    col(
        "Completions",
        "string",
        "The number of pods which reached phase Succeeded.",
    ),
    col("Duration", "string", "Time required to complete the job."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn job_row(o: &Value, now: i64) -> Cells {
    let spec = &o["spec"];
    let status = &o["status"];
    let succeeded = int(&status["succeeded"]);
    let completions = match spec["completions"].as_i64() {
        Some(n) => format!("{succeeded}/{n}"),
        None => match spec["parallelism"].as_i64().unwrap_or(0) {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let duration = match (
        parse_rfc3339(s(&status["startTime"])),
        parse_rfc3339(s(&status["completionTime"])),
    ) {
        (None, _) => String::new(),
        (Some(start), None) => human_duration(now - start),
        (Some(start), Some(end)) => human_duration(end - start),
    };
    let conds = &status["conditions"];
    // The first condition of a type decides, as upstream's hasJobCondition.
    let has = |ty: &str| {
        arr(conds)
            .iter()
            .find(|c| s(&c["type"]) == ty)
            .is_some_and(|c| s(&c["status"]) == "True")
    };
    let status = if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if is_deleting(o) {
        "Terminating"
    } else if has("Suspended") {
        "Suspended"
    } else if has("FailureTarget") {
        "FailureTarget"
    } else if has("SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else {
        "Running"
    };
    let (c, i) = containers(&spec["template"]);
    plain(vec![
        name(o),
        json!(status),
        json!(completions),
        json!(duration),
        age_cell(o, now),
        json!(c),
        json!(i),
        json!(selector_string(&spec["selector"])),
    ])
}

const CRONJOB_COLUMNS: &[Column] = &[
    NAME,
    col("Schedule", "string", "The schedule in Cron format."),
    col(
        "Timezone",
        "string",
        "The time zone name for the given schedule.",
    ),
    col(
        "Suspend",
        "boolean",
        "This flag tells the controller to suspend subsequent executions.",
    ),
    col(
        "Active",
        "integer",
        "A list of pointers to currently running jobs.",
    ),
    col(
        "Last Schedule",
        "string",
        "Information when was the last time the job was successfully scheduled.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn cronjob_row(o: &Value, now: i64) -> Cells {
    let spec = &o["spec"];
    let last = match s(&o["status"]["lastScheduleTime"]) {
        "" => "<none>".to_string(),
        t => age(t, now),
    };
    let suspend = match spec["suspend"].as_bool() {
        Some(true) => "True",
        Some(false) => "False",
        None => "<unset>",
    };
    let job_spec = &spec["jobTemplate"]["spec"];
    let (c, i) = containers(&job_spec["template"]);
    plain(vec![
        name(o),
        st(&spec["schedule"]),
        json!(or(s(&spec["timeZone"]), "<none>")),
        json!(suspend),
        json!(arr(&o["status"]["active"]).len()),
        json!(last),
        age_cell(o, now),
        json!(c),
        json!(i),
        json!(selector_string(&job_spec["selector"])),
    ])
}

// --- HPA -------------------------------------------------------------------

const HPA_COLUMNS: &[Column] = &[
    NAME,
    col("Reference", "string", "reference to scaled resource; horizontal pod autoscaler will learn the current resource consumption and will set the desired number of pods by using its Scale subresource."),
    col("Targets", "string", "metrics contains the specifications for which to use to calculate the desired replica count."),
    col("MinPods", "string", "minReplicas is the lower limit for the number of replicas to which the autoscaler can scale down."),
    col("MaxPods", "string", "maxReplicas is the upper limit for the number of replicas to which the autoscaler can scale up."),
    col("Replicas", "string", "currentReplicas is current number of replicas of pods managed by this autoscaler."),
    AGE,
];

fn hpa_row(o: &Value, now: i64) -> Cells {
    let spec = &o["spec"];
    let target = &spec["scaleTargetRef"];
    let min = match spec["minReplicas"].as_i64() {
        Some(n) => n.to_string(),
        None => "<unset>".to_string(),
    };
    plain(vec![
        name(o),
        json!(format!("{}/{}", s(&target["kind"]), s(&target["name"]))),
        json!(hpa_metrics(
            &spec["metrics"],
            &o["status"]["currentMetrics"]
        )),
        json!(min),
        json!(int(&spec["maxReplicas"])),
        json!(int(&o["status"]["currentReplicas"])),
        age_cell(o, now),
    ])
}

/// Upstream's `formatHPAMetrics` over autoscaling/v2 metric specs.
fn hpa_metrics(specs: &Value, statuses: &Value) -> String {
    let specs = arr(specs);
    if specs.is_empty() {
        return "<none>".to_string();
    }
    let statuses = arr(statuses);
    let unknown = || "<unknown>".to_string();
    let list: Vec<String> = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let status = statuses.get(i).unwrap_or(&Value::Null);
            let source = |key: &str| (&spec[key], &status[key]);
            // current/target where the target is a value or an average value.
            let value_pair = |(sp, cur): (&Value, &Value)| {
                if !sp["target"]["averageValue"].is_null() {
                    let current = if cur["current"]["averageValue"].is_null() {
                        unknown()
                    } else {
                        quantity(&cur["current"]["averageValue"])
                    };
                    format!(
                        "{current}/{} (avg)",
                        quantity(&sp["target"]["averageValue"])
                    )
                } else {
                    let current = if cur.is_object() {
                        quantity(&cur["current"]["value"])
                    } else {
                        unknown()
                    };
                    format!("{current}/{}", quantity(&sp["target"]["value"]))
                }
            };
            let resource = |(sp, cur): (&Value, &Value), prefix: String| {
                if !sp["target"]["averageValue"].is_null() {
                    let current = if cur.is_object() {
                        quantity(&cur["current"]["averageValue"])
                    } else {
                        unknown()
                    };
                    format!(
                        "{prefix}{current}/{}",
                        quantity(&sp["target"]["averageValue"])
                    )
                } else {
                    let current = match cur["current"]["averageUtilization"].as_i64() {
                        Some(n) => format!("{n}%"),
                        None => unknown(),
                    };
                    let target = match sp["target"]["averageUtilization"].as_i64() {
                        Some(n) => format!("{n}%"),
                        None => "<auto>".to_string(),
                    };
                    format!("{prefix}{current}/{target}")
                }
            };
            match s(&spec["type"]) {
                "External" => value_pair(source("external")),
                "Object" => value_pair(source("object")),
                "Pods" => {
                    let (sp, cur) = source("pods");
                    let current = if cur.is_object() {
                        quantity(&cur["current"]["averageValue"])
                    } else {
                        unknown()
                    };
                    format!("{current}/{}", quantity(&sp["target"]["averageValue"]))
                }
                "Resource" => {
                    let (sp, cur) = source("resource");
                    resource((sp, cur), format!("{}: ", s(&sp["name"])))
                }
                "ContainerResource" => {
                    let (sp, cur) = source("containerResource");
                    resource(
                        (sp, cur),
                        format!("{}/{}: ", s(&sp["container"]), s(&sp["name"])),
                    )
                }
                _ => "<unknown type>".to_string(),
            }
        })
        .collect();
    const MAX: usize = 2;
    if list.len() > MAX {
        format!("{} + {} more...", list[..MAX].join(", "), list.len() - MAX)
    } else {
        list.join(", ")
    }
}

// --- Quota, storage, RBAC --------------------------------------------------

fn resource_quota_row(o: &Value, now: i64) -> Cells {
    let hard = o["status"]["hard"].as_object();
    let used = &o["status"]["used"];
    let mut names: Vec<&String> = hard.map(|h| h.keys().collect()).unwrap_or_default();
    names.sort();
    let (mut requests, mut limits) = (Vec::new(), Vec::new());
    for r in names {
        let used_q = match quantity(&used[r.as_str()]) {
            q if q.is_empty() => "0".to_string(),
            q => q,
        };
        let entry = format!(
            "{r}: {used_q}/{}",
            quantity(&o["status"]["hard"][r.as_str()])
        );
        if r.split('.').next() == Some("limits") && r.contains('.') {
            limits.push(entry);
        } else {
            requests.push(entry);
        }
    }
    plain(vec![
        name(o),
        age_cell(o, now),
        json!(requests.join(", ")),
        json!(limits.join(", ")),
    ])
}

const PV_COLUMNS: &[Column] = &[
    NAME,
    col("Capacity", "string", "capacity is the description of the persistent volume's resources and capacity."),
    col("Access Modes", "string", "accessModes contains all ways the volume can be mounted."),
    col("Reclaim Policy", "string", "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim."),
    col("Status", "string", "phase indicates if a volume is available, bound to a claim, or released by a claim."),
    col("Claim", "string", "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim."),
    col("StorageClass", "string", "storageClassName is the name of StorageClass to which this persistent volume belongs."),
    col("VolumeAttributesClass", "string", "Name of VolumeAttributesClass to which this persistent volume belongs."),
    col("Reason", "string", "reason is a brief CamelCase string that describes any failure and is meant for machine parsing and tidy display in the CLI."),
    AGE,
    wide("VolumeMode", "string", "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state."),
];

fn access_modes(modes: &Value) -> String {
    let modes: Vec<&str> = arr(modes).iter().map(s).collect();
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(m, _)| modes.contains(m))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

/// The beta annotation still wins over `spec.storageClassName`, as upstream.
fn storage_class(o: &Value) -> String {
    match o["metadata"]["annotations"]["volume.beta.kubernetes.io/storage-class"].as_str() {
        Some(c) => c.to_string(),
        None => s(&o["spec"]["storageClassName"]).to_string(),
    }
}

fn pv_row(o: &Value, now: i64) -> Cells {
    let spec = &o["spec"];
    let claim = &spec["claimRef"];
    let claim = if claim.is_object() {
        format!("{}/{}", s(&claim["namespace"]), s(&claim["name"]))
    } else {
        String::new()
    };
    let phase = if is_deleting(o) {
        "Terminating"
    } else {
        s(&o["status"]["phase"])
    };
    plain(vec![
        name(o),
        json!(quantity(&spec["capacity"]["storage"])),
        json!(access_modes(&spec["accessModes"])),
        st(&spec["persistentVolumeReclaimPolicy"]),
        json!(phase),
        json!(claim),
        json!(storage_class(o)),
        json!(or(s(&spec["volumeAttributesClassName"]), "<unset>")),
        st(&o["status"]["reason"]),
        age_cell(o, now),
        json!(or(s(&spec["volumeMode"]), "<unset>")),
    ])
}

const PVC_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", "phase represents the current phase of PersistentVolumeClaim."),
    col("Volume", "string", "volumeName is the binding reference to the PersistentVolume backing this claim."),
    col("Capacity", "string", "capacity represents the actual resources of the underlying volume."),
    col("Access Modes", "string", "accessModes contains the actual access modes the volume backing the PVC has."),
    col("StorageClass", "string", "storageClassName is the name of the StorageClass required by the claim."),
    col("VolumeAttributesClass", "string", "currentVolumeAttributesClassName is the current name of the VolumeAttributesClass the PVC is using."),
    AGE,
    wide("VolumeMode", "string", "volumeMode defines what type of volume is required by the claim."),
];

fn pvc_row(o: &Value, now: i64) -> Cells {
    let spec = &o["spec"];
    let status = &o["status"];
    let phase = if is_deleting(o) {
        "Terminating"
    } else {
        s(&status["phase"])
    };
    // Capacity and modes are only meaningful once bound to a volume.
    let (capacity, modes) = if s(&spec["volumeName"]).is_empty() {
        (String::new(), String::new())
    } else {
        (
            quantity(&status["capacity"]["storage"]),
            access_modes(&status["accessModes"]),
        )
    };
    plain(vec![
        name(o),
        json!(phase),
        st(&spec["volumeName"]),
        json!(capacity),
        json!(modes),
        json!(storage_class(o)),
        json!(or(
            s(&status["currentVolumeAttributesClassName"]),
            "<unset>"
        )),
        age_cell(o, now),
        json!(or(s(&spec["volumeMode"]), "<unset>")),
    ])
}

const BINDING_COLUMNS: &[Column] = &[
    NAME,
    col("Role", "string", "RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace."),
    AGE,
    wide("Users", "string", "Users in the roleBinding"),
    wide("Groups", "string", "Groups in the roleBinding"),
    wide("ServiceAccounts", "string", "ServiceAccounts in the roleBinding"),
];

fn binding_row(o: &Value, now: i64) -> Cells {
    let role = &o["roleRef"];
    let (mut users, mut groups, mut sas) = (Vec::new(), Vec::new(), Vec::new());
    for subj in arr(&o["subjects"]) {
        match s(&subj["kind"]) {
            "User" => users.push(s(&subj["name"]).to_string()),
            "Group" => groups.push(s(&subj["name"]).to_string()),
            "ServiceAccount" => sas.push(format!("{}:{}", s(&subj["namespace"]), s(&subj["name"]))),
            _ => {}
        }
    }
    plain(vec![
        name(o),
        json!(format!("{}/{}", s(&role["kind"]), s(&role["name"]))),
        age_cell(o, now),
        json!(users.join(", ")),
        json!(groups.join(", ")),
        json!(sas.join(", ")),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{by_kind, KINDS};

    const T0: &str = "2024-01-01T00:00:00Z";
    const T0_UNIX: i64 = 1_704_067_200;

    fn cells(group: &str, kind: &str, obj: Value, now: i64) -> Vec<Value> {
        let k = by_kind(group, kind).unwrap();
        let t = table(k, &[obj], now, IncludeObject::None, json!({}));
        t["rows"][0]["cells"].as_array().unwrap().clone()
    }

    fn pod(status: Value) -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "default", "creationTimestamp": T0},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "nodeName": "n1"},
            "status": status,
        })
    }

    fn running(ready: bool, restarts: i64) -> Value {
        json!({"name": "a", "ready": ready, "restartCount": restarts,
               "state": {"running": {"startedAt": T0}}})
    }

    #[test]
    fn age_follows_human_duration() {
        let cases: &[(i64, &str)] = &[
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (45, "45s"),
            (119, "119s"),
            (120, "2m"),
            (330, "5m30s"),
            (599, "9m59s"),
            (600, "10m"),
            (179 * 60 + 59, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 12 * 60 + 5, "3h12m"),
            (8 * 3600, "8h"),
            (47 * 3600 + 59 * 60, "47h"),
            (48 * 3600, "2d"),
            (2 * 86_400 + 5 * 3600, "2d5h"),
            (7 * 86_400 + 23 * 3600, "7d23h"),
            (8 * 86_400, "8d"),
            (400 * 86_400, "400d"),
            (730 * 86_400, "2y"),
            (750 * 86_400, "2y20d"),
            (8 * 365 * 86_400, "8y"),
            (20 * 365 * 86_400, "20y"),
        ];
        for (secs, want) in cases {
            assert_eq!(age(T0, T0_UNIX + secs), *want, "{secs}s");
        }
        assert_eq!(age("", T0_UNIX), "<unknown>");
        assert_eq!(age("yesterday", T0_UNIX), "<invalid>");
    }

    #[test]
    fn rfc3339_round_trip_and_offsets() {
        assert_eq!(parse_rfc3339(T0), Some(T0_UNIX));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2024-01-01T02:00:00+02:00"), Some(T0_UNIX));
        assert_eq!(parse_rfc3339("2023-12-31T19:00:00-05:00"), Some(T0_UNIX));
        assert_eq!(parse_rfc3339("2024-01-01T00:00:00.999999Z"), Some(T0_UNIX));
        assert_eq!(
            parse_rfc3339("2024-02-29T00:00:00Z"),
            Some(T0_UNIX + 59 * 86_400)
        );
        for bad in [
            "2023-02-29T00:00:00Z",
            "2024-01-01 00:00:00Z",
            "2024-01-01T00:00:00",
            "2024-13-01T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00+0200",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        for t in [0, T0_UNIX, 951_782_400, 4_102_444_800, GO_ZERO_TIME] {
            assert_eq!(parse_rfc3339(&format_rfc3339(t)), Some(t));
        }
        assert_eq!(format_rfc3339(GO_ZERO_TIME), "0001-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(T0_UNIX + 3723), "2024-01-01T01:02:03Z");
    }

    #[test]
    fn pod_status_column() {
        let waiting = |reason: &str| json!({"name": "a", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": reason}}});
        let cases: Vec<(&str, Value, &str, &str)> = vec![
            (
                "pending",
                pod(json!({"phase": "Pending"})),
                "Pending",
                "0/2",
            ),
            (
                "creating",
                pod(
                    json!({"phase": "Pending", "containerStatuses": [waiting("ContainerCreating"), waiting("ContainerCreating")]}),
                ),
                "ContainerCreating",
                "0/2",
            ),
            (
                "crashloop",
                pod(json!({"phase": "Running", "containerStatuses": [
                    running(true, 0),
                    {"name": "b", "ready": false, "restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
                ]})),
                "CrashLoopBackOff",
                "1/2",
            ),
            (
                "running",
                pod(
                    json!({"phase": "Running", "containerStatuses": [running(true, 0), running(true, 0)]}),
                ),
                "Running",
                "2/2",
            ),
            (
                "completed",
                pod(json!({"phase": "Succeeded", "containerStatuses": [
                    {"name": "a", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                    {"name": "b", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
                ]})),
                "Completed",
                "0/2",
            ),
            (
                "completed but one still running",
                pod(
                    json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}], "containerStatuses": [
                        running(true, 0),
                        {"name": "b", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
                    ]}),
                ),
                "NotReady",
                "1/2",
            ),
            (
                "exit code without reason",
                pod(json!({"phase": "Failed", "containerStatuses": [
                    {"name": "a", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 3}}}
                ]})),
                "ExitCode:3",
                "0/2",
            ),
            (
                "evicted",
                pod(json!({"phase": "Failed", "reason": "Evicted"})),
                "Evicted",
                "0/2",
            ),
            (
                "init waiting",
                {
                    let mut p = pod(json!({"phase": "Pending", "initContainerStatuses": [
                        {"name": "init", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}
                    ]}));
                    p["spec"]["initContainers"] = json!([{"name": "init"}]);
                    p
                },
                "Init:0/1",
                "0/2",
            ),
            (
                "init crashloop",
                {
                    let mut p = pod(json!({"phase": "Pending", "initContainerStatuses": [
                        {"name": "init", "ready": false, "restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
                    ]}));
                    p["spec"]["initContainers"] = json!([{"name": "init"}]);
                    p
                },
                "Init:CrashLoopBackOff",
                "0/2",
            ),
            (
                "sidecar counts towards ready",
                {
                    let mut p = pod(json!({"phase": "Running",
                        "initContainerStatuses": [{"name": "proxy", "ready": true, "started": true, "restartCount": 0, "state": {"running": {}}}],
                        "containerStatuses": [running(true, 0), running(true, 0)]}));
                    p["spec"]["initContainers"] =
                        json!([{"name": "proxy", "restartPolicy": "Always"}]);
                    p
                },
                "Running",
                "3/3",
            ),
            (
                "scheduling gated",
                pod(
                    json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}),
                ),
                "SchedulingGated",
                "0/2",
            ),
            (
                "terminating",
                {
                    let mut p = pod(
                        json!({"phase": "Running", "containerStatuses": [running(true, 0), running(true, 0)]}),
                    );
                    p["metadata"]["deletionTimestamp"] = json!(T0);
                    p
                },
                "Terminating",
                "2/2",
            ),
            (
                "deleted after success stays completed",
                {
                    let mut p = pod(json!({"phase": "Succeeded", "containerStatuses": [
                        {"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}));
                    p["metadata"]["deletionTimestamp"] = json!(T0);
                    p
                },
                "Completed",
                "0/2",
            ),
            (
                "node lost",
                {
                    let mut p = pod(json!({"phase": "Running", "reason": "NodeLost"}));
                    p["metadata"]["deletionTimestamp"] = json!(T0);
                    p
                },
                "Unknown",
                "0/2",
            ),
        ];
        for (what, p, status, ready) in cases {
            let c = cells("", "Pod", p, T0_UNIX + 60);
            assert_eq!(c[2], json!(status), "{what}");
            assert_eq!(c[1], json!(ready), "{what}");
        }
    }

    #[test]
    fn pod_restarts_and_wide_cells() {
        let mut p = pod(json!({
            "phase": "Running",
            "podIPs": [{"ip": "10.0.0.7"}],
            "conditions": [{"type": "example.com/gate", "status": "True"}],
            "containerStatuses": [
                running(true, 2),
                {"name": "b", "ready": true, "restartCount": 3, "state": {"running": {}},
                 "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-01-01T00:10:00Z"}}}
            ]
        }));
        p["spec"]["readinessGates"] =
            json!([{"conditionType": "example.com/gate"}, {"conditionType": "other"}]);
        let c = cells("", "Pod", p, T0_UNIX + 900);
        assert_eq!(
            c,
            vec![
                json!("web"),
                json!("2/2"),
                json!("Running"),
                json!("5 (5m ago)"),
                json!("15m"),
                json!("10.0.0.7"),
                json!("n1"),
                json!("<none>"),
                json!("1/2"),
            ]
        );
    }

    #[test]
    fn pod_table_shape_with_metadata() {
        let pods = by_kind("", "Pod").unwrap();
        let objs = vec![pod(json!({"phase": "Pending"})), {
            let mut p = pod(
                json!({"phase": "Running", "containerStatuses": [running(true, 0), running(true, 0)]}),
            );
            p["metadata"]["name"] = json!("api");
            p
        }];
        let t = table(
            pods,
            &objs,
            T0_UNIX + 45,
            IncludeObject::Metadata,
            json!({"resourceVersion": "42", "continue": ""}),
        );
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(
            t["metadata"],
            json!({"resourceVersion": "42", "continue": ""})
        );
        let cols = t["columnDefinitions"].as_array().unwrap();
        let names: Vec<&str> = cols.iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "Name",
                "Ready",
                "Status",
                "Restarts",
                "Age",
                "IP",
                "Node",
                "Nominated Node",
                "Readiness Gates"
            ]
        );
        let prios: Vec<i64> = cols
            .iter()
            .map(|c| c["priority"].as_i64().unwrap())
            .collect();
        assert_eq!(prios, [0, 0, 0, 0, 0, 1, 1, 1, 1]);
        assert_eq!(cols[0]["format"], "name");
        assert_eq!(cols[0]["type"], "string");
        assert!(cols.iter().all(|c| c["description"].is_string()));
        let rows = t["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["cells"][0], "web");
        assert_eq!(rows[0]["cells"][4], "45s");
        assert_eq!(rows[1]["cells"][0], "api");
        assert_eq!(rows[1]["cells"][1], "2/2");
        assert_eq!(
            rows[0]["object"],
            json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": {"name": "web", "namespace": "default", "creationTimestamp": T0},
            })
        );
        let full = table(pods, &objs, T0_UNIX, IncludeObject::Object, json!({}));
        assert_eq!(full["rows"][1]["object"], objs[1]);
        let none = table(pods, &objs, T0_UNIX, IncludeObject::None, json!({}));
        assert!(none["rows"][0].get("object").is_none());
        let empty = table(pods, &[], T0_UNIX, IncludeObject::Metadata, json!({}));
        assert_eq!(empty["rows"], json!([]));
    }

    #[test]
    fn node_status_and_roles() {
        let node = |conds: Value, unschedulable: bool, labels: Value| {
            json!({
                "metadata": {"name": "n1", "creationTimestamp": T0, "labels": labels},
                "spec": {"unschedulable": unschedulable},
                "status": {"conditions": conds, "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Debian"},
                           "addresses": [{"type": "InternalIP", "address": "192.168.1.5"}, {"type": "Hostname", "address": "n1"}]}
            })
        };
        let ready = json!([{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}]);
        let cases: Vec<(Value, &str, &str)> = vec![
            (node(ready.clone(), false, json!({})), "Ready", "<none>"),
            (
                node(
                    json!([{"type": "Ready", "status": "False"}]),
                    false,
                    json!({"node-role.kubernetes.io/worker": ""}),
                ),
                "NotReady",
                "worker",
            ),
            (
                node(
                    json!([{"type": "Ready", "status": "Unknown"}]),
                    false,
                    json!({}),
                ),
                "NotReady",
                "<none>",
            ),
            (node(json!([]), false, json!({})), "Unknown", "<none>"),
            (
                node(
                    ready.clone(),
                    true,
                    json!({
                        "node-role.kubernetes.io/control-plane": "",
                        "node-role.kubernetes.io/": "",
                        "kubernetes.io/role": "master",
                        "node-role.kubernetes.io/master": "",
                    }),
                ),
                "Ready,SchedulingDisabled",
                "control-plane,master",
            ),
        ];
        for (n, status, roles) in cases {
            let c = cells("", "Node", n, T0_UNIX + 3 * 86_400);
            assert_eq!(c[1], json!(status));
            assert_eq!(c[2], json!(roles));
            assert_eq!(c[3], json!("3d"));
            assert_eq!(c[4], json!("v1.33.0"));
            assert_eq!(
                &c[5..],
                &[
                    json!("192.168.1.5"),
                    json!("<none>"),
                    json!("Debian"),
                    json!("<unknown>"),
                    json!("<unknown>")
                ]
            );
        }
    }

    #[test]
    fn service_columns() {
        let svc = |spec: Value, status: Value| json!({"metadata": {"name": "web", "creationTimestamp": T0}, "spec": spec, "status": status});
        let cases: Vec<(Value, [&str; 4], &str)> = vec![
            (
                svc(
                    json!({"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                           "ports": [{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}],
                           "selector": {"tier": "fe", "app": "web"}}),
                    json!({}),
                ),
                ["ClusterIP", "10.96.0.10", "<none>", "80/TCP,53/UDP"],
                "app=web,tier=fe",
            ),
            (
                svc(
                    json!({"type": "NodePort", "clusterIP": "10.96.0.11",
                           "ports": [{"port": 80, "nodePort": 30080}, {"port": 443, "nodePort": 30443, "protocol": "TCP"}]}),
                    json!({}),
                ),
                [
                    "NodePort",
                    "10.96.0.11",
                    "<none>",
                    "80:30080/TCP,443:30443/TCP",
                ],
                "<none>",
            ),
            (
                svc(
                    json!({"type": "LoadBalancer", "clusterIP": "10.96.0.12", "externalIPs": ["1.2.3.4"],
                           "ports": [{"port": 443, "nodePort": 31443, "protocol": "TCP"}]}),
                    json!({"loadBalancer": {"ingress": [{"ip": "5.6.7.8"}, {"hostname": "lb.example.com"}]}}),
                ),
                [
                    "LoadBalancer",
                    "10.96.0.12",
                    "5.6.7.8,lb.example.com,1.2.3.4",
                    "443:31443/TCP",
                ],
                "<none>",
            ),
            (
                svc(
                    json!({"type": "LoadBalancer", "clusterIP": "10.96.0.13", "ports": [{"port": 80}]}),
                    json!({}),
                ),
                ["LoadBalancer", "10.96.0.13", "<pending>", "80/TCP"],
                "<none>",
            ),
            (
                svc(
                    json!({"type": "ExternalName", "externalName": "db.example.com"}),
                    json!({}),
                ),
                ["ExternalName", "<none>", "db.example.com", "<none>"],
                "<none>",
            ),
            (
                svc(
                    json!({"clusterIP": "None", "ports": [{"port": 5432}]}),
                    json!({}),
                ),
                ["ClusterIP", "None", "<none>", "5432/TCP"],
                "<none>",
            ),
        ];
        for (s, want, selector) in cases {
            let c = cells("", "Service", s, T0_UNIX + 10);
            let got: Vec<&str> = c[1..5].iter().map(|v| v.as_str().unwrap()).collect();
            assert_eq!(got, want);
            assert_eq!(c[5], json!("10s"));
            assert_eq!(c[6], json!(selector));
        }
    }

    #[test]
    fn other_kinds_cells() {
        let meta = |n: &str| json!({"name": n, "namespace": "default", "creationTimestamp": T0});
        let now = T0_UNIX + 120;
        let cases: Vec<(&str, &str, Value, Vec<Value>)> = vec![
            (
                "",
                "Namespace",
                json!({"metadata": meta("prod"), "status": {"phase": "Active"}}),
                vec![json!("prod"), json!("Active"), json!("2m")],
            ),
            (
                "",
                "ConfigMap",
                json!({"metadata": meta("cm"), "data": {"a": "1", "b": "2"}, "binaryData": {"c": ""}}),
                vec![json!("cm"), json!(3), json!("2m")],
            ),
            (
                "",
                "Secret",
                json!({"metadata": meta("s"), "type": "Opaque", "data": {"a": "MQ=="}}),
                vec![json!("s"), json!("Opaque"), json!(1), json!("2m")],
            ),
            (
                "",
                "ServiceAccount",
                json!({"metadata": meta("default")}),
                vec![json!("default"), json!(0), json!("2m")],
            ),
            (
                "",
                "Endpoints",
                json!({"metadata": meta("web"), "subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "fd00::3"}, {"ip": "10.0.0.4"}], "ports": [{"port": 8080}]}]}),
                vec![
                    json!("web"),
                    json!("10.0.0.1:8080,10.0.0.2:8080,[fd00::3]:8080 + 1 more..."),
                    json!("2m"),
                ],
            ),
            (
                "",
                "Endpoints",
                json!({"metadata": meta("none")}),
                vec![json!("none"), json!("<none>"), json!("2m")],
            ),
            (
                "",
                "Event",
                json!({"metadata": meta("web.1"), "type": "Warning", "reason": "BackOff",
                                 "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{a}"},
                                 "source": {"component": "kubelet", "host": "n1"}, "message": "Back-off restarting\n",
                                 "firstTimestamp": T0, "lastTimestamp": "2024-01-01T00:01:00Z", "count": 4}),
                vec![
                    json!("60s"),
                    json!("Warning"),
                    json!("BackOff"),
                    json!("pod/web"),
                    json!("spec.containers{a}"),
                    json!("kubelet, n1"),
                    json!("Back-off restarting"),
                    json!("2m"),
                    json!(4),
                    json!("web.1"),
                ],
            ),
            (
                "",
                "ResourceQuota",
                json!({"metadata": meta("q"), "status": {"hard": {"pods": "10", "limits.cpu": "4", "requests.cpu": "2"}, "used": {"pods": "3", "requests.cpu": "500m"}}}),
                vec![
                    json!("q"),
                    json!("2m"),
                    json!("pods: 3/10, requests.cpu: 500m/2"),
                    json!("limits.cpu: 0/4"),
                ],
            ),
            (
                "",
                "LimitRange",
                json!({"metadata": meta("lr")}),
                vec![json!("lr"), json!("2024-01-01T00:00:00Z")],
            ),
            (
                "",
                "PersistentVolume",
                json!({"metadata": meta("pv1"), "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteMany", "ReadWriteOnce"], "persistentVolumeReclaimPolicy": "Retain", "claimRef": {"namespace": "default", "name": "data"}, "storageClassName": "fast"}, "status": {"phase": "Bound"}}),
                vec![
                    json!("pv1"),
                    json!("10Gi"),
                    json!("RWO,RWX"),
                    json!("Retain"),
                    json!("Bound"),
                    json!("default/data"),
                    json!("fast"),
                    json!("<unset>"),
                    json!(""),
                    json!("2m"),
                    json!("<unset>"),
                ],
            ),
            (
                "",
                "PersistentVolumeClaim",
                json!({"metadata": meta("data"), "spec": {"volumeName": "pv1", "storageClassName": "fast", "volumeMode": "Filesystem"}, "status": {"phase": "Bound", "capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"]}}),
                vec![
                    json!("data"),
                    json!("Bound"),
                    json!("pv1"),
                    json!("10Gi"),
                    json!("RWO"),
                    json!("fast"),
                    json!("<unset>"),
                    json!("2m"),
                    json!("Filesystem"),
                ],
            ),
            (
                "",
                "PersistentVolumeClaim",
                json!({"metadata": meta("pending"), "spec": {"storageClassName": "fast"}, "status": {"phase": "Pending"}}),
                vec![
                    json!("pending"),
                    json!("Pending"),
                    json!(""),
                    json!(""),
                    json!(""),
                    json!("fast"),
                    json!("<unset>"),
                    json!("2m"),
                    json!("<unset>"),
                ],
            ),
            (
                "apps",
                "Deployment",
                json!({"metadata": meta("web"), "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"spec": {"containers": [{"name": "web", "image": "nginx:1"}, {"name": "log", "image": "busybox"}]}}},
                 "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}}),
                vec![
                    json!("web"),
                    json!("2/3"),
                    json!(3),
                    json!(2),
                    json!("2m"),
                    json!("web,log"),
                    json!("nginx:1,busybox"),
                    json!("app=web"),
                ],
            ),
            (
                "apps",
                "ReplicaSet",
                json!({"metadata": meta("web-1"), "spec": {"replicas": 2}, "status": {"replicas": 2, "readyReplicas": 1}}),
                vec![
                    json!("web-1"),
                    json!(2),
                    json!(2),
                    json!(1),
                    json!("2m"),
                    json!(""),
                    json!(""),
                    json!(""),
                ],
            ),
            (
                "apps",
                "DaemonSet",
                json!({"metadata": meta("agent"), "spec": {"template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"}}}},
                 "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2, "updatedNumberScheduled": 3, "numberAvailable": 2}}),
                vec![
                    json!("agent"),
                    json!(3),
                    json!(3),
                    json!(2),
                    json!(3),
                    json!(2),
                    json!("kubernetes.io/os=linux"),
                    json!("2m"),
                    json!(""),
                    json!(""),
                    json!(""),
                ],
            ),
            (
                "apps",
                "StatefulSet",
                json!({"metadata": meta("db"), "spec": {"replicas": 3}, "status": {"readyReplicas": 3}}),
                vec![json!("db"), json!("3/3"), json!("2m"), json!(""), json!("")],
            ),
            (
                "batch",
                "Job",
                json!({"metadata": meta("pi"), "spec": {"completions": 1},
                 "status": {"succeeded": 1, "startTime": T0, "completionTime": "2024-01-01T00:00:33Z",
                            "conditions": [{"type": "Complete", "status": "True"}]}}),
                vec![
                    json!("pi"),
                    json!("Complete"),
                    json!("1/1"),
                    json!("33s"),
                    json!("2m"),
                    json!(""),
                    json!(""),
                    json!(""),
                ],
            ),
            (
                "batch",
                "Job",
                json!({"metadata": meta("run"), "spec": {"parallelism": 3}, "status": {"startTime": T0}}),
                vec![
                    json!("run"),
                    json!("Running"),
                    json!("0/1 of 3"),
                    json!("2m"),
                    json!("2m"),
                    json!(""),
                    json!(""),
                    json!(""),
                ],
            ),
            (
                "batch",
                "Job",
                json!({"metadata": meta("bad"), "spec": {"completions": 2}, "status": {"failed": 3, "conditions": [{"type": "Failed", "status": "True"}]}}),
                vec![
                    json!("bad"),
                    json!("Failed"),
                    json!("0/2"),
                    json!(""),
                    json!("2m"),
                    json!(""),
                    json!(""),
                    json!(""),
                ],
            ),
            (
                "batch",
                "Job",
                json!({"metadata": meta("sus"), "spec": {"suspend": true}, "status": {"conditions": [{"type": "Suspended", "status": "True"}]}}),
                vec![
                    json!("sus"),
                    json!("Suspended"),
                    json!("0/1"),
                    json!(""),
                    json!("2m"),
                    json!(""),
                    json!(""),
                    json!(""),
                ],
            ),
            (
                "batch",
                "CronJob",
                json!({"metadata": meta("nightly"), "spec": {"schedule": "0 3 * * *", "suspend": false},
                 "status": {"active": [{"name": "nightly-1"}], "lastScheduleTime": "2024-01-01T00:01:00Z"}}),
                vec![
                    json!("nightly"),
                    json!("0 3 * * *"),
                    json!("<none>"),
                    json!("False"),
                    json!(1),
                    json!("60s"),
                    json!("2m"),
                    json!(""),
                    json!(""),
                    json!(""),
                ],
            ),
            (
                "coordination.k8s.io",
                "Lease",
                json!({"metadata": meta("kube-scheduler"), "spec": {"holderIdentity": "n1_abc"}}),
                vec![json!("kube-scheduler"), json!("n1_abc"), json!("2m")],
            ),
            (
                "autoscaling",
                "HorizontalPodAutoscaler",
                json!({"metadata": meta("web"),
                 "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 1, "maxReplicas": 5,
                          "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}},
                                      {"type": "Pods", "pods": {"metric": {"name": "rps"}, "target": {"averageValue": "100"}}}]},
                 "status": {"currentReplicas": 2, "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 35}}}]}}),
                vec![
                    json!("web"),
                    json!("Deployment/web"),
                    json!("cpu: 35%/80%, <unknown>/100"),
                    json!("1"),
                    json!(5),
                    json!(2),
                    json!("2m"),
                ],
            ),
            (
                "autoscaling",
                "HorizontalPodAutoscaler",
                json!({"metadata": meta("bare"), "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "x"}, "maxReplicas": 3}}),
                vec![
                    json!("bare"),
                    json!("Deployment/x"),
                    json!("<none>"),
                    json!("<unset>"),
                    json!(3),
                    json!(0),
                    json!("2m"),
                ],
            ),
            (
                "rbac.authorization.k8s.io",
                "ClusterRole",
                json!({"metadata": meta("admin")}),
                vec![json!("admin"), json!("2024-01-01T00:00:00Z")],
            ),
            (
                "rbac.authorization.k8s.io",
                "RoleBinding",
                json!({"metadata": meta("rb"), "roleRef": {"kind": "ClusterRole", "name": "view"},
                 "subjects": [{"kind": "User", "name": "alice"}, {"kind": "Group", "name": "devs"}, {"kind": "ServiceAccount", "namespace": "ci", "name": "bot"}, {"kind": "User", "name": "bob"}]}),
                vec![
                    json!("rb"),
                    json!("ClusterRole/view"),
                    json!("2m"),
                    json!("alice, bob"),
                    json!("devs"),
                    json!("ci:bot"),
                ],
            ),
            (
                "discovery.k8s.io",
                "EndpointSlice",
                json!({"metadata": meta("web-abc"), "addressType": "IPv4",
                 "ports": [{"port": 80}, {"name": "metrics"}, {}],
                 "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2", "10.0.0.3"]}, {"addresses": ["10.0.0.4"]}]}),
                vec![
                    json!("web-abc"),
                    json!("IPv4"),
                    json!("80,metrics,*"),
                    json!("10.0.0.1,10.0.0.2,10.0.0.3 + 1 more..."),
                    json!("2m"),
                ],
            ),
            (
                "discovery.k8s.io",
                "EndpointSlice",
                json!({"metadata": meta("empty"), "addressType": "IPv4"}),
                vec![
                    json!("empty"),
                    json!("IPv4"),
                    json!("<unset>"),
                    json!("<unset>"),
                    json!("2m"),
                ],
            ),
            (
                "trellis.dev",
                "Plugin",
                json!({"metadata": {"name": "zone", "creationTimestamp": T0}, "spec": {"role": "scheduler"},
                    "status": {"digest": "sha256:0123456789abcdef0123", "conditions": [{"type": "Ready", "status": "True"}]}}),
                vec![
                    json!("zone"),
                    json!("scheduler"),
                    json!("True"),
                    json!("sha256:0123456789ab"),
                    json!("2m"),
                ],
            ),
            (
                "trellis.dev",
                "SchedulerProfile",
                json!({"metadata": {"name": "p", "creationTimestamp": T0}, "spec": {"plugins": [{"name": "a"}, {"name": "b"}]}}),
                vec![json!("p"), json!(""), json!(2), json!("2m")],
            ),
            (
                "trellis.dev",
                "AdmissionChain",
                json!({"metadata": {"name": "c", "creationTimestamp": T0}, "spec": {"plugins": [{"name": "a"}]},
                    "status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
                vec![json!("c"), json!("False"), json!(1), json!("2m")],
            ),
        ];
        for (group, kind, obj, want) in cases {
            assert_eq!(cells(group, kind, obj, now), want, "{kind}");
        }
    }

    #[test]
    fn every_kind_has_matching_columns_and_cells() {
        for k in KINDS {
            let t = table(k, &[json!({})], T0_UNIX, IncludeObject::Metadata, json!({}));
            let cols = t["columnDefinitions"].as_array().unwrap().len();
            assert_eq!(
                t["rows"][0]["cells"].as_array().unwrap().len(),
                cols,
                "{}",
                k.kind
            );
            let first = &t["columnDefinitions"][0]["name"];
            assert!(first == "Name" || k.kind == "Event", "{}", k.kind);
            assert_eq!(t["rows"][0]["object"]["metadata"], json!({}));
        }
    }

    #[test]
    fn table_request_negotiation() {
        let kubectl = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        let cases: &[(&str, Option<&str>)] = &[
            (kubectl, Some("meta.k8s.io/v1")),
            ("application/json;as=Table;v=v1beta1;g=meta.k8s.io, application/json", Some("meta.k8s.io/v1beta1")),
            ("application/json; as=Table; g=meta.k8s.io; v=v1", Some("meta.k8s.io/v1")),
            ("application/json", None),
            ("*/*", None),
            ("", None),
            ("application/json;as=Table;v=v2;g=meta.k8s.io,application/json", None),
            ("application/json;as=Table;v=v1;g=example.com", None),
            ("application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io,application/json", None),
            ("application/json;q=0.9,application/json;as=Table;v=v1;g=meta.k8s.io", Some("meta.k8s.io/v1")),
            ("application/json;as=Table;v=v1;g=meta.k8s.io;q=0.5,application/json", None),
            ("application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1;g=meta.k8s.io", Some("meta.k8s.io/v1")),
        ];
        for (accept, want) in cases {
            assert_eq!(table_api_version(accept), *want, "{accept}");
            assert_eq!(is_table_request(accept), want.is_some(), "{accept}");
        }
    }

    #[test]
    fn include_object_query() {
        assert_eq!(IncludeObject::from_query(None), Ok(IncludeObject::Metadata));
        assert_eq!(
            IncludeObject::from_query(Some("")),
            Ok(IncludeObject::Metadata)
        );
        assert_eq!(
            IncludeObject::from_query(Some("None")),
            Ok(IncludeObject::None)
        );
        assert_eq!(
            IncludeObject::from_query(Some("Object")),
            Ok(IncludeObject::Object)
        );
        assert_eq!(
            IncludeObject::from_query(Some("all"))
                .unwrap_err()
                .to_string(),
            "includeObject: Invalid value: \"all\": must be 'Metadata', 'Object', 'None', or empty"
        );
    }
}
