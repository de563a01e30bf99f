//! The admission chain: `AdmissionChain` objects (`trellis.dev/v1alpha1`)
//! name `Plugin` objects of role `admission`; every request that writes an
//! object goes through the plugins whose rules match it, after decoding,
//! defaulting and validation and before storage: mutating plugins first
//! (their JSON patches applied in order, then the object validated again),
//! then validating ones.
//!
//! ```yaml
//! apiVersion: trellis.dev/v1alpha1
//! kind: AdmissionChain
//! metadata: {name: quota}               # chains run in name order
//! spec:
//!   plugins:
//!   - name: limit-range                 # a Plugin object of role admission
//!     type: Mutating                    # or Validating (default)
//!     rules:                            # as a webhook's; "*" for any
//!     - {apiGroups: [""], apiVersions: ["*"], operations: [CREATE, UPDATE], resources: [pods]}
//!     namespaceSelector: {matchLabels: {team: a}}   # optional
//!     objectSelector: {}                             # optional
//!     config: {}
//!     deadline: 10ms
//!     memoryLimit: 32Mi
//!     failurePolicy: Fail               # or Ignore
//! ```
//!
//! A denial is a 403 (`pods "x" is forbidden: ...`) or a 422 with the
//! plugin's message. A plugin that fails (error, trap, deadline, memory
//! cap) under `Fail` refuses the request with 500 naming the plugin; under
//! `Ignore` the request goes on, counted in `/metrics` and written to the
//! audit log. Writes a plugin makes through `objects-write.update-status`
//! are staged and committed in one store transaction with the request's own
//! write ([`Staged`]); a lost race reruns the chain.
//!
//! The chain is rebuilt off the request path when the objects change and
//! swapped atomically: a request runs wholly on the chain it started with.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde_json::{json, Value};
use trellis_plugin_host::admission::AdmissionPlugin;
use trellis_plugin_host::wit::{KindRef, ObjectError};
use trellis_plugin_host::{
    entry_budget, spec_version, status_unchanged, Budget, HostServices, ObjectSink, ObjectSource,
    PluginSource,
};

use crate::auth::UserInfo;
use crate::registry::{self, Kind};
use crate::selectors::LabelSelector;
use crate::storage::{resource_version, ListOptions, Objects};
use crate::ApiError;

/// How often the chain objects are checked for changes.
const POLL: Duration = Duration::from_millis(250);
/// How many times a chain reruns after its staged writes lost a race.
pub(crate) const MAX_RERUNS: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    Fail,
    Ignore,
}

struct Rule {
    groups: Vec<String>,
    versions: Vec<String>,
    operations: Vec<String>,
    resources: Vec<String>,
}

fn any_of(list: &[String], v: &str) -> bool {
    list.iter().any(|x| x == "*" || x == v)
}

impl Rule {
    fn matches(&self, op: &str, kind: &Kind) -> bool {
        any_of(&self.groups, kind.group)
            && any_of(&self.versions, kind.version)
            && any_of(&self.operations, op)
            && any_of(&self.resources, kind.plural)
    }
}

struct Entry {
    name: String,
    plugin: AdmissionPlugin,
    mutating: bool,
    rules: Vec<Rule>,
    namespace_selector: Option<LabelSelector>,
    object_selector: Option<LabelSelector>,
    policy: Policy,
}

/// The plugins of every `AdmissionChain`, mutating ones first.
#[derive(Default)]
pub(crate) struct Chain {
    entries: Vec<Arc<Entry>>,
}

/// One request as admission sees it.
pub(crate) struct Request<'a> {
    pub operation: &'static str,
    pub kind: &'static Kind,
    pub namespace: &'a str,
    pub name: &'a str,
    pub user: Option<&'a UserInfo>,
    pub object: Option<Value>,
    pub old: Option<&'a Value>,
    pub dry_run: bool,
}

/// A write a plugin staged: the object's new `status`, to be stored only if
/// the object is still at `expected`.
#[derive(Debug, Clone)]
pub(crate) struct Staged {
    pub kind: &'static Kind,
    pub namespace: String,
    pub name: String,
    pub status: Value,
    pub expected: i64,
}

/// What the chain decided.
#[derive(Default)]
pub(crate) struct Admitted {
    /// The object after mutating plugins (when the request had one).
    pub object: Option<Value>,
    pub staged: Vec<Staged>,
    pub warnings: Vec<String>,
}

thread_local! {
    /// The staging area of the review running on this thread.
    static STAGE: RefCell<Vec<Staged>> = const { RefCell::new(Vec::new()) };
}

/// `objects-read` for admission plugins: reads the store directly, on the
/// thread the review runs on.
struct StoreReader {
    objects: Objects,
    handle: tokio::runtime::Handle,
}

fn kind_of(k: &KindRef) -> Result<&'static Kind, ObjectError> {
    registry::by_kind(&k.group, &k.kind)
        .ok_or_else(|| ObjectError::Invalid(format!("no kind {}/{}", k.group, k.kind)))
}

fn store_error(e: ApiError) -> ObjectError {
    match e.code {
        404 => ObjectError::NotFound,
        409 => ObjectError::Conflict(e.message),
        400 | 422 => ObjectError::Invalid(e.message),
        _ => ObjectError::Unavailable(e.message),
    }
}

impl ObjectSource for StoreReader {
    fn get(&self, kind: &KindRef, namespace: &str, name: &str) -> Result<String, ObjectError> {
        let k = kind_of(kind)?;
        let obj =
            wait_for(&self.handle, self.objects.get(k, namespace, name)).map_err(store_error)?;
        Ok(obj.to_string())
    }

    fn list(
        &self,
        kind: &KindRef,
        namespace: &str,
        label_selector: &str,
    ) -> Result<Vec<String>, ObjectError> {
        let k = kind_of(kind)?;
        let mut opts = ListOptions::default();
        if !label_selector.is_empty() {
            opts.labels = Some(
                LabelSelector::parse(label_selector)
                    .map_err(|e| ObjectError::Invalid(e.to_string()))?,
            );
        }
        let page =
            wait_for(&self.handle, self.objects.list(k, namespace, &opts)).map_err(store_error)?;
        Ok(page.items.iter().map(Value::to_string).collect())
    }
}

/// `objects-write` for admission plugins: `update-status` is staged on the
/// review's thread; the request commits it.
struct Stager;

const ONLY_STATUS: &str =
    "admission plugins may only stage status updates (update-status); they are committed with the request";

impl ObjectSink for Stager {
    fn create(&self, _: &KindRef, _: &str, _: &str) -> Result<String, ObjectError> {
        Err(ObjectError::AccessDenied(ONLY_STATUS.into()))
    }
    fn update(&self, _: &KindRef, _: &str, _: &str) -> Result<String, ObjectError> {
        Err(ObjectError::AccessDenied(ONLY_STATUS.into()))
    }
    fn update_status(
        &self,
        kind: &KindRef,
        namespace: &str,
        object: &str,
    ) -> Result<String, ObjectError> {
        let k = kind_of(kind)?;
        let obj: Value =
            serde_json::from_str(object).map_err(|e| ObjectError::Invalid(e.to_string()))?;
        let name = obj["metadata"]["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ObjectError::Invalid("metadata.name is required".into()))?;
        let expected = resource_version(&obj).ok_or_else(|| {
            ObjectError::Invalid("metadata.resourceVersion is required to stage a write".into())
        })?;
        STAGE.with(|s| {
            let mut s = s.borrow_mut();
            // A second write to one object replaces the first.
            s.retain(|w| !(w.kind.kind == k.kind && w.namespace == namespace && w.name == name));
            s.push(Staged {
                kind: k,
                namespace: namespace.to_string(),
                name: name.to_string(),
                status: obj["status"].clone(),
                expected,
            });
        });
        Ok(object.to_string())
    }
    fn merge_patch(&self, _: &KindRef, _: &str, _: &str, _: &str) -> Result<String, ObjectError> {
        Err(ObjectError::AccessDenied(ONLY_STATUS.into()))
    }
    fn delete(&self, _: &KindRef, _: &str, _: &str, _: &str) -> Result<(), ObjectError> {
        Err(ObjectError::AccessDenied(ONLY_STATUS.into()))
    }
}

/// Failures let through under `Ignore`, per plugin, for `/metrics`.
#[derive(Default)]
pub(crate) struct Metrics {
    ignored: Mutex<BTreeMap<String, u64>>,
    denied: Mutex<BTreeMap<String, u64>>,
    failed: Mutex<BTreeMap<String, u64>>,
}

impl Metrics {
    fn bump(map: &Mutex<BTreeMap<String, u64>>, plugin: &str) {
        *map.lock()
            .expect("metrics lock")
            .entry(plugin.to_string())
            .or_default() += 1;
    }

    /// Prometheus text exposition.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        for (name, help, map) in [
            (
                "trellis_admission_plugin_ignored_failures_total",
                "Admission plugin failures let through by failurePolicy Ignore.",
                &self.ignored,
            ),
            (
                "trellis_admission_plugin_failures_total",
                "Admission plugin failures that refused the request (failurePolicy Fail).",
                &self.failed,
            ),
            (
                "trellis_admission_plugin_denials_total",
                "Requests an admission plugin denied.",
                &self.denied,
            ),
        ] {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
            for (plugin, n) in map.lock().expect("metrics lock").iter() {
                out.push_str(&format!("{name}{{plugin=\"{plugin}\"}} {n}\n"));
            }
        }
        out
    }
}

/// The admission runtime of one API server.
pub(crate) struct Admission {
    chain: ArcSwap<Chain>,
    pub metrics: Metrics,
    audit: Option<Mutex<std::fs::File>>,
    /// The last phase run took longer than [`SLOW`]: run the next ones
    /// with the runtime worker handed off ([`Placement::HandOff`]).
    slow: AtomicBool,
}

impl Admission {
    pub(crate) fn new(audit_log: Option<PathBuf>) -> Self {
        let audit = audit_log.and_then(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&p)
                .map_err(|e| tracing::warn!(path = %p.display(), error = %e, "cannot open the audit log"))
                .ok()
                .map(Mutex::new)
        });
        Self {
            chain: ArcSwap::from_pointee(Chain::default()),
            metrics: Metrics::default(),
            audit,
            slow: AtomicBool::new(false),
        }
    }

    /// Whether any plugin could apply to `operation` on `kind` (fast path).
    pub(crate) fn applies(&self, operation: &str, kind: &Kind) -> bool {
        self.chain
            .load()
            .entries
            .iter()
            .any(|e| e.rules.iter().any(|r| r.matches(operation, kind)))
    }

    fn audit(&self, req: &Request<'_>, annotations: &BTreeMap<String, String>) {
        let Some(file) = &self.audit else { return };
        if annotations.is_empty() {
            return;
        }
        let line = json!({
            "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
            "auditID": uuid::Uuid::new_v4().to_string(),
            "verb": req.operation.to_lowercase(),
            "user": {"username": req.user.map(|u| u.name.as_str()).unwrap_or("")},
            "objectRef": {"resource": req.kind.plural, "namespace": req.namespace, "name": req.name,
                          "apiGroup": req.kind.group, "apiVersion": req.kind.version},
            "annotations": annotations,
            "stageTimestamp": crate::util::now_rfc3339(),
        });
        let mut f = file.lock().expect("audit lock");
        let _ = writeln!(f, "{line}");
    }

    /// Run the matching plugins of one phase (`mutating` or not) on the
    /// request, on a blocking thread. Mutating plugins' patches are applied
    /// to `req.object`.
    pub(crate) async fn run(
        &self,
        req: &mut Request<'_>,
        mutating: bool,
        namespace_labels: Option<&Value>,
        out: &mut Admitted,
    ) -> Result<(), ApiError> {
        let chain = self.chain.load_full();
        let op = req.operation;
        let subject = req
            .object
            .as_ref()
            .or(req.old)
            .cloned()
            .unwrap_or(Value::Null);
        let todo: Vec<usize> = chain
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.mutating == mutating)
            .filter(|(_, e)| e.rules.iter().any(|r| r.matches(op, req.kind)))
            .filter(|(_, e)| {
                e.object_selector
                    .as_ref()
                    .is_none_or(|s| s.matches_object(&subject))
            })
            .filter(|(_, e)| match (&e.namespace_selector, namespace_labels) {
                (None, _) => true,
                (Some(s), Some(ns)) => s.matches_object(ns),
                (Some(_), None) => !req.kind.namespaced,
            })
            .map(|(i, _)| i)
            .collect();
        if todo.is_empty() {
            return Ok(());
        }
        let mut review = json!({
            "uid": uuid::Uuid::new_v4().to_string(),
            "kind": {"group": req.kind.group, "version": req.kind.version, "kind": req.kind.kind},
            "resource": {"group": req.kind.group, "version": req.kind.version, "resource": req.kind.plural},
            "subResource": "",
            "name": req.name,
            "namespace": req.namespace,
            "operation": op,
            "userInfo": req.user.map(|u| json!({"username": u.name, "uid": u.uid, "groups": u.groups})).unwrap_or(json!({})),
            "object": req.object.clone().unwrap_or(Value::Null),
            "oldObject": req.old.cloned().unwrap_or(Value::Null),
            "dryRun": req.dry_run,
            "options": {},
        });
        let chain2 = chain.clone();
        type Outcome = (
            Value,
            Vec<Staged>,
            Vec<String>,
            BTreeMap<String, String>,
            Result<(), Verdict>,
        );
        let placement = if self.slow.load(Ordering::Relaxed) {
            Placement::HandOff
        } else {
            Placement::Inline
        };
        let started = std::time::Instant::now();
        let outcome = run_chain(placement, move || {
            STAGE.with(|s| s.borrow_mut().clear());
            let mut warnings = Vec::new();
            let mut annotations = BTreeMap::new();
            let mut verdict = Ok(());
            for i in todo {
                let e = &chain2.entries[i];
                let text = review.to_string();
                match e.plugin.review(&text) {
                    Ok(r) => {
                        warnings.extend(r.warnings);
                        for a in r.audit_annotations {
                            annotations.insert(format!("{}/{}", e.name, a.key), a.value);
                        }
                        if !r.allowed {
                            verdict = Err(Verdict::Denied {
                                plugin: e.name.clone(),
                                code: if r.code == 422 { 422 } else { 403 },
                                message: r.message,
                            });
                            break;
                        }
                        if !r.patch.is_empty() {
                            if !e.mutating {
                                verdict = Err(Verdict::Failed {
                                    plugin: e.name.clone(),
                                    message: "a validating plugin returned a patch".into(),
                                });
                                break;
                            }
                            let applied = serde_json::from_str::<Value>(&r.patch)
                                .map_err(|err| err.to_string())
                                .and_then(|ops| {
                                    crate::patch::json_patch(&review["object"], &ops)
                                        .map_err(|err| err.to_string())
                                });
                            match applied {
                                Ok(obj) => review["object"] = obj,
                                Err(m) => {
                                    verdict = Err(Verdict::Failed {
                                        plugin: e.name.clone(),
                                        message: format!("its patch does not apply: {m}"),
                                    });
                                    break;
                                }
                            }
                        }
                    }
                    Err(err) => match e.policy {
                        Policy::Ignore => {
                            annotations.insert(
                                format!("trellis.dev/admission-ignored-{}", e.name),
                                err.to_string(),
                            );
                            warnings.push(format!(
                                "admission plugin {:?} failed and was ignored: {err}",
                                e.name
                            ));
                        }
                        Policy::Fail => {
                            verdict = Err(Verdict::Failed {
                                plugin: e.name.clone(),
                                message: err.to_string(),
                            });
                            break;
                        }
                    },
                }
            }
            let staged = STAGE.with(|s| std::mem::take(&mut *s.borrow_mut()));
            (review, staged, warnings, annotations, verdict)
        })
        .await?;
        self.slow.store(started.elapsed() > SLOW, Ordering::Relaxed);
        let (review, staged, warnings, annotations, verdict): Outcome = outcome;
        for name in annotations
            .keys()
            .filter_map(|k| k.strip_prefix("trellis.dev/admission-ignored-"))
        {
            Metrics::bump(&self.metrics.ignored, name);
        }
        self.audit(req, &annotations);
        out.warnings.extend(warnings);
        match verdict {
            Ok(()) => {
                if mutating {
                    req.object = Some(review["object"].clone());
                }
                if !req.dry_run {
                    out.staged.extend(staged);
                }
                out.object = req.object.clone();
                Ok(())
            }
            Err(Verdict::Denied {
                plugin,
                code,
                message,
            }) => {
                Metrics::bump(&self.metrics.denied, &plugin);
                let full = format!(
                    "{} \"{}\" is forbidden: {message}",
                    req.kind.plural, req.name
                );
                if code == 422 {
                    Err(ApiError::invalid(
                        req.kind,
                        req.name,
                        format!("{} \"{}\" is invalid: {message}", req.kind.kind, req.name),
                        json!([]),
                    ))
                } else {
                    Err(ApiError::forbidden(full))
                }
            }
            Err(Verdict::Failed { plugin, message }) => {
                Metrics::bump(&self.metrics.failed, &plugin);
                Err(ApiError::internal(format!(
                    "failed calling admission plugin \"{plugin}\": {message}"
                )))
            }
        }
    }
}

enum Verdict {
    Denied {
        plugin: String,
        code: u16,
        message: String,
    },
    Failed {
        plugin: String,
        message: String,
    },
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn selector(v: &Value) -> Result<Option<LabelSelector>, String> {
    if v.is_null() {
        return Ok(None);
    }
    LabelSelector::from_label_selector(v)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Build one `AdmissionChain` object's entries; an error names the entry.
fn build(
    source: &PluginSource,
    services: &HostServices,
    chain: &Value,
    plugins: &HashMap<String, Value>,
) -> Result<Vec<Arc<Entry>>, String> {
    let mut out = Vec::new();
    let cname = chain["metadata"]["name"].as_str().unwrap_or_default();
    for (i, e) in chain["spec"]["plugins"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let at = format!("AdmissionChain {cname:?} spec.plugins[{i}]");
        let name = e["name"].as_str().unwrap_or_default().to_string();
        let obj = plugins
            .get(&name)
            .ok_or_else(|| format!("{at}: no Plugin object named {name:?}"))?;
        let resolved = source
            .compile(obj, "admission")
            .map_err(|m| format!("{at}: {m}"))?;
        let budget = entry_budget(e).map_err(|m| format!("{at}.{m}"))?;
        let spec = resolved
            .spec(e.get("config").filter(|c| !c.is_null()), budget)
            .services(services.clone());
        let plugin = AdmissionPlugin::from_compiled(source.engine(), &resolved.component, spec)
            .map_err(|err| format!("{at}: {err}"))?;
        let rules = e["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| Rule {
                groups: strings(&r["apiGroups"]),
                versions: {
                    let v = strings(&r["apiVersions"]);
                    if v.is_empty() {
                        vec!["*".into()]
                    } else {
                        v
                    }
                },
                operations: strings(&r["operations"]),
                resources: strings(&r["resources"]),
            })
            .collect();
        out.push(Arc::new(Entry {
            name,
            plugin,
            mutating: e["type"] == "Mutating",
            rules,
            namespace_selector: selector(&e["namespaceSelector"])
                .map_err(|m| format!("{at}.namespaceSelector: {m}"))?,
            object_selector: selector(&e["objectSelector"])
                .map_err(|m| format!("{at}.objectSelector: {m}"))?,
            policy: if e["failurePolicy"] == "Ignore" {
                Policy::Ignore
            } else {
                Policy::Fail
            },
        }));
    }
    Ok(out)
}

/// The combined chain: every object's entries in object-name order, the
/// mutating ones of all first.
fn combine(built: &BTreeMap<String, (String, Vec<Arc<Entry>>)>) -> Chain {
    let all = built.values().flat_map(|(_, e)| e.iter().cloned());
    let (mut m, v): (Vec<_>, Vec<_>) = all.partition(|e| e.mutating);
    m.extend(v);
    Chain { entries: m }
}

/// Keep the chain in step with the objects until the server stops.
pub(crate) async fn watch_chains(
    admission: Arc<Admission>,
    objects: Objects,
    source: PluginSource,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let chain_kind = registry::by_kind("trellis.dev", "AdmissionChain").expect("served");
    let plugin_kind = registry::by_kind("trellis.dev", "Plugin").expect("served");
    let services = HostServices {
        objects: Some(Arc::new(StoreReader {
            objects: objects.clone(),
            handle: tokio::runtime::Handle::current(),
        })),
        writer: Some(Arc::new(Stager)),
        exec: None,
    };
    // Chain name -> (the versions it was built from, its entries). A chain
    // that fails to build keeps its last good entries; others still change.
    let mut built: BTreeMap<String, (String, Vec<Arc<Entry>>)> = BTreeMap::new();
    let mut tried: HashMap<String, String> = HashMap::new();
    // Admission plugin name -> version last reported on.
    let mut checked: HashMap<String, String> = HashMap::new();
    loop {
        let lists = async {
            let chains = objects
                .list(chain_kind, "", &ListOptions::default())
                .await?;
            let plugins = objects
                .list(plugin_kind, "", &ListOptions::default())
                .await?;
            Ok::<_, ApiError>((chains.items, plugins.items))
        };
        match lists.await {
            Ok((chains, plugins)) => {
                let plugins: HashMap<String, Value> = plugins
                    .into_iter()
                    .map(|p| {
                        (
                            p["metadata"]["name"]
                                .as_str()
                                .unwrap_or_default()
                                .to_string(),
                            p,
                        )
                    })
                    .collect();
                for p in plugins
                    .values()
                    .filter(|p| p["spec"]["role"] == "admission")
                {
                    let pname = p["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    if checked.get(&pname) == Some(&spec_version(p)) {
                        continue;
                    }
                    let (source, services, p2) = (source.clone(), services.clone(), p.clone());
                    if let Ok(status) =
                        tokio::task::spawn_blocking(move || check_plugin(&source, &services, &p2))
                            .await
                    {
                        set_status(&objects, plugin_kind, p, status).await;
                    }
                    checked.insert(pname, spec_version(p));
                }
                checked.retain(|n, _| plugins.contains_key(n));
                let mut changed = false;
                let names: Vec<String> = chains
                    .iter()
                    .map(|c| {
                        c["metadata"]["name"]
                            .as_str()
                            .unwrap_or_default()
                            .to_string()
                    })
                    .collect();
                let gone: Vec<String> = built
                    .keys()
                    .filter(|n| !names.contains(n))
                    .cloned()
                    .collect();
                for n in gone {
                    built.remove(&n);
                    changed = true;
                }
                tried.retain(|n, _| names.contains(n));
                for (c, name) in chains.iter().zip(&names) {
                    let mut fp = spec_version(c);
                    for e in c["spec"]["plugins"].as_array().into_iter().flatten() {
                        let n = e["name"].as_str().unwrap_or_default();
                        fp.push(';');
                        fp.push_str(&plugins.get(n).map(spec_version).unwrap_or_default());
                    }
                    if tried.get(name) == Some(&fp) {
                        continue;
                    }
                    let (source, services, c2, p2) =
                        (source.clone(), services.clone(), c.clone(), plugins.clone());
                    let result =
                        tokio::task::spawn_blocking(move || build(&source, &services, &c2, &p2))
                            .await
                            .unwrap_or_else(|e| Err(format!("building the chain panicked: {e}")));
                    match result {
                        Ok(entries) => {
                            tracing::info!(chain = %name, plugins = entries.len(), "admission chain loaded");
                            built.insert(name.clone(), (fp.clone(), entries));
                            changed = true;
                            set_ready(&objects, chain_kind, c, Ok(())).await;
                        }
                        Err(m) => {
                            tracing::warn!(chain = %name, error = %m, "admission chain refused; its previous version keeps running");
                            set_ready(&objects, chain_kind, c, Err(&m)).await;
                        }
                    }
                    tried.insert(name.clone(), fp);
                }
                if changed {
                    admission.chain.store(Arc::new(combine(&built)));
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read admission chains"),
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// Record on a chain object whether it is active.
async fn set_ready(objects: &Objects, kind: &'static Kind, c: &Value, r: Result<(), &str>) {
    let (status, reason, message) = match r {
        Ok(()) => ("True", "Active", "chain active".to_string()),
        Err(m) => (
            "False",
            "Invalid",
            format!("{m}; the previous version of this chain (if any) keeps running"),
        ),
    };
    let cond = json!({"conditions": [{"type": "Ready", "status": status, "reason": reason,
        "message": message, "lastTransitionTime": crate::util::now_rfc3339()}]});
    set_status(objects, kind, c, cond).await;
}

/// Write `status` (plus `observedGeneration`) unless the object already
/// says the same: our own writes come back on the next poll.
async fn set_status(objects: &Objects, kind: &'static Kind, obj: &Value, mut status: Value) {
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    status["observedGeneration"] = obj["metadata"]["generation"].clone();
    if status_unchanged(&obj["status"], &status) {
        return;
    }
    for _ in 0..3 {
        let Ok(cur) = objects.get(kind, "", name).await else {
            break;
        };
        if cur["metadata"]["generation"] != obj["metadata"]["generation"] {
            break; // changed meanwhile: the next poll reports on the new one
        }
        let mut new = cur.clone();
        new["status"] = status.clone();
        let rv = resource_version(&cur).unwrap_or(0);
        match objects.replace(kind, "", name, new, rv).await {
            Err(e) if e.code == 409 => continue,
            _ => break,
        }
    }
}

/// Load an admission `Plugin` object once, to report on it.
fn check_plugin(source: &PluginSource, services: &HostServices, obj: &Value) -> Value {
    let loaded = source.compile(obj, "admission").and_then(|r| {
        let spec = r.spec(None, Budget::default()).services(services.clone());
        AdmissionPlugin::from_compiled(source.engine(), &r.component, spec)
            .map(|_| r.component.digest.to_string())
            .map_err(|e| e.to_string())
    });
    let now = crate::util::now_rfc3339();
    match loaded {
        Ok(digest) => json!({"digest": digest, "conditions": [{"type": "Ready", "status": "True",
            "reason": "Loaded", "message": "compiled, linked and configured", "lastTransitionTime": now}]}),
        Err(m) => json!({"conditions": [{"type": "Ready", "status": "False",
            "reason": "LoadFailed", "message": m, "lastTransitionTime": now}]}),
    }
}

/// A phase that took longer than this makes the next ones hand their
/// runtime worker off while they run.
const SLOW: Duration = Duration::from_millis(5);

/// Where a phase of the chain runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// On the request's own thread, as it is: a review is a short call
    /// (tens to hundreds of µs), and handing the runtime worker off
    /// (`block_in_place`) or hopping to another thread cost as much again,
    /// and more in the tail. A store read that must wait (etcd) hands the
    /// worker off then ([`wait_for`]).
    Inline,
    /// On the request's thread after handing its runtime worker to another
    /// thread: after a slow phase (a plugin looping to its deadline), so
    /// such plugins do not hold the runtime's workers.
    HandOff,
}

/// Run a phase of the chain (`f`) where `placement` says. On a
/// current-thread runtime (tests) it runs on the blocking pool, as the one
/// thread must not wait on itself.
async fn run_chain<R: Send + 'static>(
    placement: Placement,
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, ApiError> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match (Handle::current().runtime_flavor(), placement) {
        (RuntimeFlavor::MultiThread, Placement::Inline) => Ok(f()),
        (RuntimeFlavor::MultiThread, Placement::HandOff) => Ok(tokio::task::block_in_place(f)),
        _ => tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| ApiError::internal(format!("admission: {e}"))),
    }
}

/// The result of `fut`, from synchronous code inside a review. A store
/// read that is ready at once (the embedded store reads from memory) costs
/// one poll; one that must wait (etcd) blocks this thread, first handing
/// its runtime worker to another thread when it is one.
fn wait_for<F: std::future::Future>(handle: &tokio::runtime::Handle, fut: F) -> F::Output {
    use std::task::{Context, Poll, Waker};
    use tokio::runtime::{Handle, RuntimeFlavor};
    let mut fut = std::pin::pin!(fut);
    if let Poll::Ready(v) = fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        return v;
    }
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(|| handle.block_on(fut))
        }
        _ => handle.block_on(fut),
    }
}
