//! An in-process fake of the Kubernetes API server for the operator's tests.
//!
//! No Kubernetes API server can be installed on the machines that build ebb
//! (DESIGN.md §7), so the reconcilers are tested against this fake instead, in
//! the spirit of kube-rs/controller-rs `fixtures.rs`. Unlike a mocked
//! `tower::Service`, the fake serves real HTTP on 127.0.0.1, so an unmodified
//! `kube::Client` — request building, error decoding, watch streaming and
//! `kube::runtime::watcher` — is part of what every test exercises.
//!
//! The fake knows no schemas: any `/api/v1/...` or `/apis/{group}/{version}/...`
//! path names a resource, and objects are stored as JSON. It implements the
//! verbs the operator uses: get, list and watch (label and field selectors,
//! resourceVersion replay, 410 Gone after compaction), create (incl.
//! `generateName`), replace, the four patch types, the `/status` subresource,
//! delete with finalizers, and owner-reference garbage collection.
//!
//! Simplified compared with the real API server:
//! - Strategic merge patch is treated as JSON merge patch (lists replaced
//!   whole, `$patch` directives not understood).
//! - Server-side apply merges maps recursively and replaces lists whole (no
//!   merge keys). Field ownership is tracked per (manager, subresource) as the
//!   set of leaf paths the manager applied, stored in `managedFields` as
//!   simplified `FieldsV1` (lists are atomic leaves); only `Apply` managers own
//!   fields. A field a manager applied before and omits now is removed unless
//!   another manager owns it; changing a field another `Apply` manager owns is
//!   a 409 unless `force=true`, which transfers ownership.
//! - No admission, validation, defaulting or schemas: any resource exists, a
//!   namespace need not exist, and field selectors work on any field.
//! - A JSON patch `test` of `null` passes on a missing path (as in the real
//!   server, which kube-runtime's finalizer helper relies on).
//! - The last 2000 changes are kept for watch replay; [`FakeApi::compact`]
//!   forgets them all, as etcd compaction does. A watch that times out ends
//!   with a BOOKMARK when bookmarks were asked for.
//! - `dryRun` is honoured by undoing the write; no-op writes keep the
//!   resourceVersion and send no event, as in the real server.
//! - `limit`/`continue` are ignored (lists come back whole); a watch from a
//!   resourceVersion newer than the current one starts there instead of waiting.
//! - Pods are removed at once (no grace period, no kubelet); foreground
//!   deletion behaves like background; `Orphan` strips the owner reference.
//! - Garbage collection runs synchronously when the owner is removed, and only
//!   deletes dependents that have no other live owner.
//! - `.metadata.generation` starts at 1 and increases whenever `.spec` changes.
//! - Writes to the main resource keep the stored `.status`, writes to
//!   `/status` change only `.status` — for every kind (objects created outside
//!   group `ebb.dev` keep the status they were created with).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Number of changes kept for watches that resume from an older resourceVersion.
const HISTORY_LIMIT: usize = 2000;
/// Largest request body the fake accepts.
const MAX_BODY_BYTES: usize = 16 << 20;
/// How long a watch lasts when the client gives no `timeoutSeconds`.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// A fake Kubernetes API server serving HTTP on 127.0.0.1 from a background
/// task; dropping it stops the server and ends open watches.
pub struct FakeApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
    /// Dropped with the fake, which ends every watch stream.
    _shutdown: watch::Sender<bool>,
}

impl FakeApi {
    /// Binds 127.0.0.1:0 and serves in a background tokio task (stops when dropped).
    pub async fn start() -> FakeApi {
        let listener =
            tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0 for the fake API server");
        let addr = listener.local_addr().expect("local address of a bound listener");
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new(addr.port())),
            changes: watch::channel(0).0,
            shutdown: shutdown_rx,
        });
        let router = Router::new().fallback(serve).with_state(shared.clone());
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                eprintln!("fake API server stopped: {error}");
            }
        });
        FakeApi { addr, shared, server, _shutdown: shutdown_tx }
    }

    /// A kube::Client talking to it (default namespace "default"); call it
    /// inside a tokio runtime.
    pub fn client(&self) -> kube::Client {
        let url = format!("http://{}", self.addr);
        let mut config = kube::Config::new(url.parse().expect("a socket address is a valid URI"));
        config.default_namespace = "default".to_owned();
        kube::Client::try_from(config).expect("a plain-HTTP kube client builds")
    }

    /// Every stored object of a resource, e.g. `objects("apps/v1", "deployments")`,
    /// across namespaces, as JSON.
    pub fn objects(&self, api_version: &str, plural: &str) -> Vec<Value> {
        let key = (api_version.to_owned(), plural.to_owned());
        let store = self.shared.store();
        store.objects.get(&key).map(|all| all.values().cloned().collect()).unwrap_or_default()
    }

    /// One object (namespace — "" for cluster-scoped objects — and name) or None.
    pub fn object(&self, api_version: &str, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let resource = (api_version.to_owned(), plural.to_owned());
        self.shared.store().get(&resource, &(namespace.to_owned(), name.to_owned())).cloned()
    }

    /// Requests served so far as (method, path-with-query, content-type).
    pub fn requests(&self) -> Vec<(String, String, Option<String>)> {
        self.shared.store().requests.clone()
    }

    /// Forgets the change history, as etcd compaction does: a watch from any
    /// resourceVersion older than the current one then gets 410 Gone.
    pub fn compact(&self) {
        let mut store = self.shared.store();
        store.history.clear();
        store.compacted = store.resource_version;
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// State shared by the request handlers and the watch streams.
struct Shared {
    store: Mutex<Store>,
    /// The latest resourceVersion; watch streams wait on it.
    changes: watch::Sender<u64>,
    /// Closed when the [`FakeApi`] is dropped.
    shutdown: watch::Receiver<bool>,
}

impl Shared {
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// (apiVersion, plural), e.g. ("apps/v1", "deployments").
type ResourceKey = (String, String);
/// (namespace, name); the namespace is "" for cluster-scoped objects.
type ObjectKey = (String, String);
/// A path of map keys into an object, e.g. ["metadata", "labels", "app"].
type FieldPath = Vec<String>;

/// Everything the fake stores.
#[derive(Clone)]
struct Store {
    resource_version: u64,
    /// Distinguishes the uids of different fakes.
    instance: u16,
    uids: u64,
    objects: BTreeMap<ResourceKey, BTreeMap<ObjectKey, Value>>,
    kinds: HashMap<ResourceKey, String>,
    history: VecDeque<Change>,
    /// Every change with a resourceVersion above this one is in `history`.
    compacted: u64,
    requests: Vec<(String, String, Option<String>)>,
}

/// One write, as watch streams see it.
#[derive(Clone)]
struct Change {
    resource_version: u64,
    resource: ResourceKey,
    kind: ChangeKind,
    object: Value,
    previous: Option<Value>,
}

#[derive(Clone, Copy, PartialEq)]
enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// What a request path names.
struct Target {
    group: String,
    api_version: String,
    plural: String,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

impl Target {
    fn resource(&self) -> ResourceKey {
        (self.api_version.clone(), self.plural.clone())
    }

    fn key(&self) -> ObjectKey {
        (self.namespace.clone().unwrap_or_default(), self.name.clone().unwrap_or_default())
    }

    /// "pods" or "deployments.apps", as the real server words its messages.
    fn qualified(&self) -> String {
        match self.group.as_str() {
            "" => self.plural.clone(),
            group => format!("{}.{group}", self.plural),
        }
    }
}

fn parse_path(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let (namespace, plural, tail) = match rest {
        ["namespaces", _, "status"] => (None, "namespaces", &rest[1..]),
        ["namespaces", namespace, plural, tail @ ..] => (Some(*namespace), *plural, tail),
        [plural, tail @ ..] => (None, *plural, tail),
        [] => return None,
    };
    let (name, status) = match tail {
        [] => (None, false),
        [name] => (Some(*name), false),
        [name, "status"] => (Some(*name), true),
        _ => return None,
    };
    Some(Target {
        group: group.to_owned(),
        api_version: if group.is_empty() { version.to_owned() } else { format!("{group}/{version}") },
        plural: plural.to_owned(),
        namespace: namespace.map(str::to_owned),
        name: name.map(str::to_owned),
        status,
    })
}

/// An error answered as a `Status` object.
#[derive(Debug)]
struct ApiError {
    code: u16,
    reason: &'static str,
    message: String,
    details: Value,
}

impl ApiError {
    fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError { code, reason, message: message.into(), details: json!({}) }
    }

    fn about(code: u16, reason: &'static str, target: &Target, name: &str, message: String) -> Self {
        let mut details = json!({ "name": name, "kind": target.plural });
        if !target.group.is_empty() {
            details["group"] = json!(target.group);
        }
        ApiError { code, reason, message, details }
    }

    fn not_found(target: &Target, name: &str) -> Self {
        let message = format!("{} \"{name}\" not found", target.qualified());
        Self::about(404, "NotFound", target, name, message)
    }

    fn already_exists(target: &Target, name: &str) -> Self {
        let message = format!("{} \"{name}\" already exists", target.qualified());
        Self::about(409, "AlreadyExists", target, name, message)
    }

    fn conflict(target: &Target, name: &str, why: &str) -> Self {
        let message = format!("Operation cannot be fulfilled on {} \"{name}\": {why}", target.qualified());
        Self::about(409, "Conflict", target, name, message)
    }

    fn stale(target: &Target, name: &str) -> Self {
        let why = "the object has been modified; please apply your changes to the latest version and try again";
        Self::conflict(target, name, why)
    }

    fn invalid(target: &Target, name: &str, why: &str) -> Self {
        let message = format!("{} \"{name}\" is invalid: {why}", target.qualified());
        Self::about(422, "Invalid", target, name, message)
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    fn status(&self) -> Value {
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        })
    }
}

/// The answer to a request.
enum Reply {
    Object(StatusCode, Value),
    Watch(WatchStart),
}

async fn serve(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let path_and_query = parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
    shared.store().requests.push((parts.method.as_str().to_owned(), path_and_query, content_type.clone()));
    let query = Query::parse(parts.uri.query());
    let reply = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Err(error) => Err(ApiError::new(413, "RequestEntityTooLarge", error.to_string())),
        Ok(body) => {
            let mut store = shared.store();
            let saved = query.get("dryRun").is_some().then(|| store.clone());
            let reply =
                route(&mut store, parts.method.as_str(), parts.uri.path(), &query, content_type.as_deref(), &body);
            if let Some(saved) = saved {
                *store = saved;
            }
            let latest = store.resource_version;
            drop(store);
            shared.changes.send_if_modified(|rv| std::mem::replace(rv, latest) != latest);
            reply
        }
    };
    match reply {
        Ok(Reply::Object(code, value)) => json_response(code, &value),
        Ok(Reply::Watch(start)) => watch_response(shared, start),
        Err(error) => {
            let code = StatusCode::from_u16(error.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            json_response(code, &error.status())
        }
    }
}

fn json_response(code: StatusCode, value: &Value) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_default();
    (code, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

fn route(
    store: &mut Store,
    method: &str,
    path: &str,
    query: &Query,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Reply, ApiError> {
    if path == "/version" && method == "GET" {
        return Ok(Reply::Object(StatusCode::OK, version_info()));
    }
    let unknown = || ApiError::new(404, "NotFound", "the server could not find the requested resource");
    let target = parse_path(path).ok_or_else(unknown)?;
    let ok = |value: Value| -> Result<Reply, ApiError> { Ok(Reply::Object(StatusCode::OK, value)) };
    match (method, target.name.is_some()) {
        ("GET", false) if query.is_watch() => store.watch(&target, query).map(Reply::Watch),
        ("GET", false) => ok(store.list(&target, query)?),
        ("GET", true) => ok(store.get_or_404(&target)?.clone()),
        ("POST", false) => {
            let object = parse_object(body)?;
            Ok(Reply::Object(StatusCode::CREATED, store.create(&target, object, Vec::new())?))
        }
        ("PUT", true) => ok(store.replace(&target, parse_object(body)?)?),
        ("PATCH", true) => store.patch(&target, query, content_type, body),
        ("DELETE", true) => ok(store.delete_request(&target, body)?),
        ("DELETE", false) => ok(store.delete_collection(&target, query)?),
        _ => Err(ApiError::new(405, "MethodNotAllowed", format!("the server does not allow {method} on {path}"))),
    }
}

fn parse_object(body: &[u8]) -> Result<Value, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body of the request was in an unknown format: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request("the body of the request must be a JSON object"));
    }
    Ok(value)
}

fn version_info() -> Value {
    json!({
        "major": "1", "minor": "33", "gitVersion": "v1.33.0-ebb-fake", "gitCommit": "0000000",
        "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24",
        "compiler": "gc", "platform": "linux/amd64",
    })
}

impl Store {
    fn new(instance: u16) -> Self {
        Store {
            resource_version: 1,
            instance,
            uids: 0,
            objects: BTreeMap::new(),
            kinds: HashMap::new(),
            history: VecDeque::new(),
            compacted: 1,
            requests: Vec::new(),
        }
    }

    fn get(&self, resource: &ResourceKey, key: &ObjectKey) -> Option<&Value> {
        self.objects.get(resource)?.get(key)
    }

    fn get_or_404(&self, target: &Target) -> Result<&Value, ApiError> {
        let name = target.name.as_deref().unwrap_or_default();
        self.get(&target.resource(), &target.key()).ok_or_else(|| ApiError::not_found(target, name))
    }

    fn kind(&self, target: &Target) -> String {
        self.kinds.get(&target.resource()).cloned().unwrap_or_else(|| kind_of_plural(&target.plural))
    }

    fn next_uid(&mut self) -> String {
        self.uids += 1;
        format!("{:08x}-0000-4000-8000-{:012x}", self.instance, self.uids)
    }

    /// Objects of the target's resource in its namespace (all when none).
    fn matching<'a>(&'a self, target: &'a Target, selector: &'a Selector) -> impl Iterator<Item = &'a Value> + 'a {
        let namespace = target.namespace.as_deref();
        self.objects
            .get(&target.resource())
            .into_iter()
            .flat_map(|objects| objects.iter())
            .filter(move |((ns, _), _)| namespace.is_none_or(|wanted| wanted == ns))
            .map(|(_, object)| object)
            .filter(|object| selector.matches(object))
    }

    fn list_value(&self, target: &Target, items: Vec<Value>) -> Value {
        json!({
            "apiVersion": target.api_version,
            "kind": format!("{}List", self.kind(target)),
            "metadata": { "resourceVersion": self.resource_version.to_string() },
            "items": items,
        })
    }

    fn list(&self, target: &Target, query: &Query) -> Result<Value, ApiError> {
        let selector = Selector::from_query(query)?;
        let items = self.matching(target, &selector).cloned().collect();
        Ok(self.list_value(target, items))
    }

    fn create(&mut self, target: &Target, mut object: Value, managed: Vec<Value>) -> Result<Value, ApiError> {
        if target.status {
            return Err(ApiError::new(405, "MethodNotAllowed", "cannot create the status subresource"));
        }
        let namespace = target.namespace.clone().unwrap_or_default();
        let body_namespace = str_at(&object, &["metadata", "namespace"]).unwrap_or_default();
        if !body_namespace.is_empty() && body_namespace != namespace {
            let why = "the namespace of the provided object does not match the namespace sent on the request";
            return Err(ApiError::bad_request(why));
        }
        let mut name = str_at(&object, &["metadata", "name"]).unwrap_or_default().to_owned();
        if name.is_empty() {
            let prefix = str_at(&object, &["metadata", "generateName"]).unwrap_or_default().to_owned();
            if prefix.is_empty() {
                let why = "metadata.name: Required value: name or generateName is required";
                return Err(ApiError::invalid(target, "", why));
            }
            name = self.generate_name(target, &namespace, &prefix);
        }
        let key = (namespace.clone(), name.clone());
        if self.get(&target.resource(), &key).is_some() {
            return Err(ApiError::already_exists(target, &name));
        }
        let kind = match object.get("kind").and_then(Value::as_str) {
            Some(kind) if !kind.is_empty() => kind.to_owned(),
            _ => self.kind(target),
        };
        self.kinds.insert(target.resource(), kind.clone());
        let uid = self.next_uid();
        object["apiVersion"] = json!(target.api_version);
        object["kind"] = json!(kind);
        if target.group == "ebb.dev" {
            remove_key(&mut object, "status");
        }
        let metadata = child_map(as_map(&mut object), "metadata");
        metadata.insert("name".into(), json!(name));
        if namespace.is_empty() {
            metadata.remove("namespace");
        } else {
            metadata.insert("namespace".into(), json!(namespace));
        }
        metadata.insert("uid".into(), json!(uid));
        metadata.insert("creationTimestamp".into(), json!(now()));
        metadata.insert("generation".into(), json!(1));
        for server_owned in ["deletionTimestamp", "deletionGracePeriodSeconds", "managedFields", "resourceVersion"] {
            metadata.remove(server_owned);
        }
        if !managed.is_empty() {
            metadata.insert("managedFields".into(), Value::Array(managed));
        }
        Ok(self.commit(&target.resource(), &key, object, None))
    }

    fn generate_name(&mut self, target: &Target, namespace: &str, prefix: &str) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        loop {
            self.uids += 1;
            let mut n = self.uids.wrapping_mul(2_654_435_761) ^ u64::from(self.instance);
            let suffix: String = (0..5)
                .map(|_| {
                    let c = ALPHABET[(n % ALPHABET.len() as u64) as usize] as char;
                    n /= ALPHABET.len() as u64;
                    c
                })
                .collect();
            let name = format!("{prefix}{suffix}");
            if self.get(&target.resource(), &(namespace.to_owned(), name.clone())).is_none() {
                return name;
            }
        }
    }

    fn replace(&mut self, target: &Target, object: Value) -> Result<Value, ApiError> {
        let name = target.name.as_deref().unwrap_or_default();
        if let Some(body_name) = str_at(&object, &["metadata", "name"]).filter(|n| *n != name) {
            let why = format!("the name of the object ({body_name}) does not match the name on the URL ({name})");
            return Err(ApiError::bad_request(why));
        }
        let stored = self.get_or_404(target)?.clone();
        self.update(target, stored, object, None)
    }

    /// Writes `candidate` over `stored`, keeping what the client may not
    /// change, and checking the resourceVersion precondition it carries.
    fn update(
        &mut self,
        target: &Target,
        stored: Value,
        candidate: Value,
        managed: Option<Vec<Value>>,
    ) -> Result<Value, ApiError> {
        let name = str_at(&stored, &["metadata", "name"]).unwrap_or_default().to_owned();
        for precondition in ["resourceVersion", "uid"] {
            let wanted = str_at(&candidate, &["metadata", precondition]).unwrap_or_default();
            if !wanted.is_empty() && Some(wanted) != str_at(&stored, &["metadata", precondition]) {
                return Err(ApiError::stale(target, &name));
            }
        }
        if !candidate.is_object() || candidate.get("metadata").is_some_and(|m| !m.is_object()) {
            return Err(ApiError::invalid(target, &name, "the object and its metadata must be JSON objects"));
        }
        let mut result = if target.status { stored.clone() } else { candidate.clone() };
        match if target.status { &candidate } else { &stored }.get("status") {
            Some(status) => result["status"] = status.clone(),
            None => remove_key(&mut result, "status"),
        }
        let stored_metadata = stored.get("metadata").and_then(Value::as_object).cloned().unwrap_or_default();
        result["apiVersion"] = stored["apiVersion"].clone();
        result["kind"] = stored["kind"].clone();
        let metadata = child_map(as_map(&mut result), "metadata");
        let server_owned = ["name", "namespace", "uid", "creationTimestamp", "deletionTimestamp"].into_iter().chain([
            "deletionGracePeriodSeconds",
            "generation",
            "resourceVersion",
            "managedFields",
        ]);
        for field in server_owned {
            match stored_metadata.get(field) {
                Some(value) => metadata.insert(field.to_owned(), value.clone()),
                None => metadata.remove(field),
            };
        }
        match managed {
            Some(managed) if !managed.is_empty() => {
                metadata.insert("managedFields".into(), Value::Array(managed));
            }
            Some(_) => {
                metadata.remove("managedFields");
            }
            None => {}
        }
        if result.get("spec") != stored.get("spec") {
            let generation = stored_metadata.get("generation").and_then(Value::as_i64).unwrap_or(0);
            child_map(as_map(&mut result), "metadata").insert("generation".into(), json!(generation + 1));
        }
        if result == stored {
            return Ok(stored);
        }
        let key = (target.namespace.clone().unwrap_or_default(), name);
        Ok(self.commit(&target.resource(), &key, result, Some(stored)))
    }

    fn patch(
        &mut self,
        target: &Target,
        query: &Query,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<Reply, ApiError> {
        let media_type = content_type.unwrap_or_default().split(';').next().unwrap_or_default().trim();
        let name = target.name.as_deref().unwrap_or_default();
        let patched = match media_type {
            "application/apply-patch+yaml" => return self.apply(target, query, body),
            "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                let patch = parse_object(body)?;
                let mut object = self.get_or_404(target)?.clone();
                merge_patch(&mut object, &patch);
                object
            }
            "application/json-patch+json" => {
                let patch: json_patch::Patch = serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
                let mut object = self.get_or_404(target)?.clone();
                for (i, operation) in patch.iter().enumerate() {
                    // As in the real server, `test` of null passes on a missing path
                    // (kube-runtime's finalizer helper relies on it).
                    if let json_patch::PatchOperation::Test(test) = operation
                        && test.value.is_null()
                        && object.pointer(test.path.as_str()).is_none()
                    {
                        continue;
                    }
                    json_patch::patch_unsafe(&mut object, std::slice::from_ref(operation)).map_err(|e| {
                        ApiError::invalid(target, name, &format!("the JSON patch failed at operation {i}: {}", e.kind))
                    })?;
                }
                object
            }
            other => {
                let message = format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {other:?})"
                );
                return Err(ApiError::new(415, "UnsupportedMediaType", message));
            }
        };
        let stored = self.get_or_404(target)?.clone();
        Ok(Reply::Object(StatusCode::OK, self.update(target, stored, patched, None)?))
    }

    /// Server-side apply (see the module documentation for what is simplified).
    fn apply(&mut self, target: &Target, query: &Query, body: &[u8]) -> Result<Reply, ApiError> {
        let name = target.name.clone().unwrap_or_default();
        let manager = query.get("fieldManager").unwrap_or_default().to_owned();
        if manager.is_empty() {
            return Err(ApiError::invalid(target, &name, "fieldManager: Required value: is required for apply patch"));
        }
        let force = query.get("force") == Some("true");
        let applied: Value = match serde_json::from_slice(body) {
            Ok(value) => value,
            Err(_) => {
                serde_yaml::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
            }
        };
        if !applied.is_object() || str_at(&applied, &["kind"]).is_none_or(str::is_empty) {
            return Err(ApiError::bad_request("invalid object type: apiVersion and kind must be set"));
        }
        if let Some(body_name) = str_at(&applied, &["metadata", "name"]).filter(|n| *n != name) {
            let why = format!("the name of the object ({body_name}) does not match the name on the URL ({name})");
            return Err(ApiError::bad_request(why));
        }
        let subresource = if target.status { "status" } else { "" };
        let new_paths = applied_paths(&applied, target.status);
        let entry = |paths: &BTreeSet<FieldPath>| {
            let mut entry = json!({
                "manager": manager, "operation": "Apply", "apiVersion": target.api_version,
                "time": now(), "fieldsType": "FieldsV1", "fieldsV1": encode_fields(paths),
            });
            if target.status {
                entry["subresource"] = json!("status");
            }
            entry
        };
        let Some(stored) = self.get(&target.resource(), &target.key()).cloned() else {
            if target.status {
                return Err(ApiError::not_found(target, &name));
            }
            let mut object = applied.clone();
            child_map(as_map(&mut object), "metadata").insert("name".into(), json!(name));
            let created = self.create(target, object, vec![entry(&new_paths)])?;
            return Ok(Reply::Object(StatusCode::CREATED, created));
        };

        let mut managers = managed_entries(&stored);
        let mine = |m: &Managed| m.manager == manager && m.subresource == subresource;
        let mut conflicts = Vec::new();
        for other in managers.iter_mut().filter(|m| !mine(m) && m.subresource == subresource) {
            let contested: Vec<FieldPath> = other
                .paths
                .iter()
                .filter(|owned| {
                    new_paths.iter().any(|path| {
                        let longer = if path.len() > owned.len() { path } else { *owned };
                        overlaps(path, owned) && value_at(&stored, longer) != value_at(&applied, longer)
                    })
                })
                .cloned()
                .collect();
            if force {
                other.paths.retain(|p| !contested.contains(p));
            } else {
                conflicts
                    .extend(contested.iter().map(|p| format!("conflict with \"{}\": .{}", other.manager, p.join("."))));
            }
        }
        if !conflicts.is_empty() {
            let why = format!("Apply failed with {} conflict(s): {}", conflicts.len(), conflicts.join(", "));
            return Err(ApiError::conflict(target, &name, &why));
        }

        let previous = managers.iter().find(|m| mine(m)).map(|m| m.paths.clone()).unwrap_or_default();
        let mut object = stored.clone();
        for dropped in previous.iter().filter(|p| !new_paths.iter().any(|n| overlaps(n, p))) {
            let owned_elsewhere =
                managers.iter().filter(|m| !mine(m)).any(|m| m.paths.iter().any(|q| overlaps(q, dropped)));
            if !owned_elsewhere {
                remove_path(&mut object, dropped);
            }
        }
        merge_patch(&mut object, &applied);

        let mut managed = Vec::new();
        let mut replaced = false;
        for m in &managers {
            if mine(m) {
                replaced = true;
                managed.push(if m.paths == new_paths { m.raw.clone() } else { entry(&new_paths) });
            } else if !m.paths.is_empty() {
                let mut raw = m.raw.clone();
                if m.operation == "Apply" {
                    raw["fieldsV1"] = encode_fields(&m.paths);
                }
                managed.push(raw);
            }
        }
        if !replaced {
            managed.push(entry(&new_paths));
        }
        Ok(Reply::Object(StatusCode::OK, self.update(target, stored, object, Some(managed))?))
    }

    fn delete_request(&mut self, target: &Target, body: &[u8]) -> Result<Value, ApiError> {
        let options: Value = if body.iter().all(u8::is_ascii_whitespace) { json!({}) } else { parse_object(body)? };
        let stored = self.get_or_404(target)?.clone();
        let name = target.name.as_deref().unwrap_or_default();
        for precondition in ["resourceVersion", "uid"] {
            if let Some(wanted) = str_at(&options, &["preconditions", precondition]) {
                if Some(wanted) != str_at(&stored, &["metadata", precondition]) {
                    return Err(ApiError::conflict(target, name, &format!("Precondition failed: {precondition}")));
                }
            }
        }
        let orphan = str_at(&options, &["propagationPolicy"]) == Some("Orphan");
        Ok(self.delete(&target.resource(), &target.key(), orphan).unwrap_or(stored))
    }

    fn delete_collection(&mut self, target: &Target, query: &Query) -> Result<Value, ApiError> {
        let selector = Selector::from_query(query)?;
        let keys: Vec<ObjectKey> = self
            .matching(target, &selector)
            .map(|o| (str_at(o, &["metadata", "namespace"]).unwrap_or_default().to_owned(), object_name(o)))
            .collect();
        let deleted = keys.iter().filter_map(|key| self.delete(&target.resource(), key, false)).collect();
        Ok(self.list_value(target, deleted))
    }

    /// Deletes, or marks for deletion when finalizers remain. Returns the
    /// object's last state, or None when it was not there.
    fn delete(&mut self, resource: &ResourceKey, key: &ObjectKey, orphan: bool) -> Option<Value> {
        let stored = self.get(resource, key)?.clone();
        if finalizers_empty(&stored) {
            return self.remove(resource, key, None, orphan);
        }
        if stored["metadata"].get("deletionTimestamp").is_some() {
            return Some(stored);
        }
        let mut object = stored.clone();
        let metadata = child_map(as_map(&mut object), "metadata");
        metadata.insert("deletionTimestamp".into(), json!(now()));
        metadata.insert("deletionGracePeriodSeconds".into(), json!(0));
        Some(self.commit(resource, key, object, Some(stored)))
    }

    /// Stores a write and records it for watches; an object left with a
    /// deletionTimestamp and no finalizers is removed instead.
    fn commit(&mut self, resource: &ResourceKey, key: &ObjectKey, mut object: Value, previous: Option<Value>) -> Value {
        if object["metadata"].get("deletionTimestamp").is_some() && finalizers_empty(&object) {
            return self.remove(resource, key, Some(object), false).unwrap_or_default();
        }
        self.resource_version += 1;
        child_map(as_map(&mut object), "metadata")
            .insert("resourceVersion".into(), json!(self.resource_version.to_string()));
        self.objects.entry(resource.clone()).or_default().insert(key.clone(), object.clone());
        let kind = if previous.is_some() { ChangeKind::Modified } else { ChangeKind::Added };
        self.record(resource, kind, object.clone(), previous);
        object
    }

    /// Removes an object (its last state may be given) and garbage-collects
    /// its dependents.
    fn remove(&mut self, resource: &ResourceKey, key: &ObjectKey, last: Option<Value>, orphan: bool) -> Option<Value> {
        let stored = self.objects.get_mut(resource)?.remove(key)?;
        let mut object = last.unwrap_or_else(|| stored.clone());
        self.resource_version += 1;
        child_map(as_map(&mut object), "metadata")
            .insert("resourceVersion".into(), json!(self.resource_version.to_string()));
        self.record(resource, ChangeKind::Deleted, object.clone(), Some(stored));
        if let Some(uid) = str_at(&object, &["metadata", "uid"]) {
            self.collect_garbage(&uid.to_owned(), orphan);
        }
        Some(object)
    }

    /// Deletes the dependents of a removed owner that have no other live
    /// owner, or strips their reference to it when orphaning.
    fn collect_garbage(&mut self, owner_uid: &str, orphan: bool) {
        let owners_of = |object: &Value| -> Vec<String> {
            let references = object["metadata"].get("ownerReferences").and_then(Value::as_array);
            let uids = references.into_iter().flatten().filter_map(|r| r.get("uid").and_then(Value::as_str));
            uids.map(str::to_owned).collect()
        };
        let dependents: Vec<(ResourceKey, ObjectKey)> = self
            .objects
            .iter()
            .flat_map(|(resource, objects)| objects.iter().map(move |(key, object)| (resource, key, object)))
            .filter(|(_, _, object)| owners_of(object).iter().any(|uid| uid == owner_uid))
            .map(|(resource, key, _)| (resource.clone(), key.clone()))
            .collect();
        for (resource, key) in dependents {
            let Some(object) = self.get(&resource, &key).cloned() else {
                continue;
            };
            if orphan {
                let mut updated = object.clone();
                if let Some(references) = updated["metadata"].get_mut("ownerReferences").and_then(Value::as_array_mut) {
                    references.retain(|r| r.get("uid").and_then(Value::as_str) != Some(owner_uid));
                }
                self.commit(&resource, &key, updated, Some(object));
                continue;
            }
            let other_owner_alive = owners_of(&object).iter().any(|uid| uid != owner_uid && self.uid_exists(uid));
            if !other_owner_alive {
                self.delete(&resource, &key, false);
            }
        }
    }

    fn uid_exists(&self, uid: &str) -> bool {
        self.objects.values().flat_map(BTreeMap::values).any(|o| str_at(o, &["metadata", "uid"]) == Some(uid))
    }

    fn record(&mut self, resource: &ResourceKey, kind: ChangeKind, object: Value, previous: Option<Value>) {
        self.history.push_back(Change {
            resource_version: self.resource_version,
            resource: resource.clone(),
            kind,
            object,
            previous,
        });
        while self.history.len() > HISTORY_LIMIT {
            if let Some(dropped) = self.history.pop_front() {
                self.compacted = dropped.resource_version;
            }
        }
    }

    /// Starts a watch: the events to send first and the resourceVersion after
    /// which changes are streamed.
    fn watch(&self, target: &Target, query: &Query) -> Result<WatchStart, ApiError> {
        let selector = Selector::from_query(query)?;
        let kind = self.kind(target);
        let send_initial = query.get("sendInitialEvents") == Some("true");
        let mut start = WatchStart {
            resource: target.resource(),
            namespace: target.namespace.clone(),
            selector,
            api_version: target.api_version.clone(),
            kind,
            lines: VecDeque::new(),
            cursor: self.resource_version,
            bookmarks: query.get("allowWatchBookmarks") == Some("true"),
            timeout: query
                .get("timeoutSeconds")
                .and_then(|s| s.parse().ok())
                .map_or(DEFAULT_WATCH_TIMEOUT, Duration::from_secs)
                .min(DEFAULT_WATCH_TIMEOUT),
            done: false,
        };
        let from = match query.get("resourceVersion").filter(|rv| !rv.is_empty() && *rv != "0") {
            None => None,
            Some(rv) => {
                Some(rv.parse::<u64>().map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?)
            }
        };
        match from {
            Some(rv) if rv < self.compacted => {
                let message = format!("too old resource version: {rv} ({})", self.compacted + 1);
                let gone = ApiError::new(410, "Expired", message);
                start.lines.push_back(event_line("ERROR", &gone.status()));
                start.done = true;
            }
            Some(rv) if !send_initial => start.cursor = rv,
            _ => {
                for object in self.matching(target, &start.selector) {
                    start.lines.push_back(event_line("ADDED", object));
                }
                if send_initial {
                    let bookmark = start.bookmark(self.resource_version, true);
                    start.lines.push_back(bookmark);
                }
            }
        }
        Ok(start)
    }
}

/// A running watch: what it filters on and where it is in the history.
struct WatchStart {
    resource: ResourceKey,
    namespace: Option<String>,
    selector: Selector,
    api_version: String,
    kind: String,
    lines: VecDeque<Bytes>,
    cursor: u64,
    bookmarks: bool,
    timeout: Duration,
    done: bool,
}

impl WatchStart {
    fn bookmark(&self, resource_version: u64, initial_events_end: bool) -> Bytes {
        let mut annotations = json!({});
        if initial_events_end {
            annotations["k8s.io/initial-events-end"] = json!("true");
        }
        let object = json!({
            "apiVersion": self.api_version,
            "kind": self.kind,
            "metadata": { "resourceVersion": resource_version.to_string(), "annotations": annotations },
        });
        event_line("BOOKMARK", &object)
    }

    /// The event a watcher sees for a change: a change that makes an object
    /// enter or leave the selector is an ADDED or DELETED, as in the real server.
    fn event_for(&self, change: &Change) -> Option<Bytes> {
        if change.resource != self.resource {
            return None;
        }
        let namespace = str_at(&change.object, &["metadata", "namespace"]).unwrap_or_default();
        if self.namespace.as_deref().is_some_and(|wanted| wanted != namespace) {
            return None;
        }
        let matches = self.selector.matches(&change.object);
        let matched = change.previous.as_ref().is_some_and(|p| self.selector.matches(p));
        let kind = match (change.kind, matched, matches) {
            (ChangeKind::Added, _, true) => "ADDED",
            (ChangeKind::Modified, true, true) => "MODIFIED",
            (ChangeKind::Modified, false, true) => "ADDED",
            (ChangeKind::Modified, true, false) => "DELETED",
            (ChangeKind::Deleted, matched, matches) if matched || matches => "DELETED",
            _ => return None,
        };
        Some(event_line(kind, &change.object))
    }

    /// Queues the changes after the cursor; a 410 when they were compacted away.
    fn catch_up(&mut self, store: &Store) {
        if self.cursor < store.compacted {
            let message = format!("too old resource version: {} ({})", self.cursor, store.compacted + 1);
            self.lines.push_back(event_line("ERROR", &ApiError::new(410, "Expired", message).status()));
            self.done = true;
            return;
        }
        let start = store.history.partition_point(|c| c.resource_version <= self.cursor);
        let lines: Vec<Bytes> = store.history.range(start..).filter_map(|c| self.event_for(c)).collect();
        self.lines.extend(lines);
        self.cursor = self.cursor.max(store.resource_version);
    }
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({ "type": kind, "object": object })).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn watch_response(shared: Arc<Shared>, start: WatchStart) -> Response {
    let deadline = tokio::time::Instant::now() + start.timeout;
    let changes = shared.changes.subscribe();
    let shutdown = shared.shutdown.clone();
    let state = (shared, start, changes, shutdown);
    let stream = futures::stream::unfold(state, move |(shared, mut watch, mut changes, mut shutdown)| async move {
        loop {
            if let Some(line) = watch.lines.pop_front() {
                return Some((Ok::<_, Infallible>(line), (shared, watch, changes, shutdown)));
            }
            if watch.done {
                return None;
            }
            changes.borrow_and_update();
            watch.catch_up(&shared.store());
            if !watch.lines.is_empty() {
                continue;
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return None },
                _ = shutdown.changed() => return None,
                _ = tokio::time::sleep_until(deadline) => {
                    watch.done = true;
                    if watch.bookmarks {
                        let bookmark = watch.bookmark(watch.cursor, false);
                        watch.lines.push_back(bookmark);
                    }
                }
            }
        }
    });
    let content_type = [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))];
    (StatusCode::OK, content_type, Body::from_stream(stream)).into_response()
}

/// Decoded query parameters.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: Option<&str>) -> Query {
        let pairs = query.unwrap_or_default().split('&').filter(|p| !p.is_empty());
        Query(
            pairs
                .map(|pair| {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    (percent_decode(key), percent_decode(value))
                })
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn is_watch(&self) -> bool {
        matches!(self.get("watch"), Some("true" | "1"))
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
                continue;
            }
            (b'+', _) => out.push(b' '),
            (other, _) => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A label selector and a field selector, both ANDed requirements.
#[derive(Default)]
struct Selector {
    labels: Vec<LabelRequirement>,
    fields: Vec<(FieldPath, bool, String)>,
}

enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

impl Selector {
    fn from_query(query: &Query) -> Result<Selector, ApiError> {
        let labels = parse_label_selector(query.get("labelSelector").unwrap_or_default())
            .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
        let mut fields = Vec::new();
        for requirement in query.get("fieldSelector").unwrap_or_default().split(',').map(str::trim) {
            if requirement.is_empty() {
                continue;
            }
            let (path, equal, value) = if let Some((path, value)) = requirement.split_once("!=") {
                (path, false, value)
            } else if let Some((path, value)) = requirement.split_once("==").or_else(|| requirement.split_once('=')) {
                (path, true, value)
            } else {
                return Err(ApiError::bad_request(format!("invalid field selector: {requirement:?}")));
            };
            let path = path.trim().split('.').map(str::to_owned).collect();
            fields.push((path, equal, value.trim().to_owned()));
        }
        Ok(Selector { labels, fields })
    }

    fn matches(&self, object: &Value) -> bool {
        let labels = object["metadata"].get("labels").and_then(Value::as_object);
        let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        let labels_match = self.labels.iter().all(|requirement| match requirement {
            LabelRequirement::Equals(key, value) => label(key) == Some(value),
            LabelRequirement::NotEquals(key, value) => label(key) != Some(value),
            LabelRequirement::In(key, values) => label(key).is_some_and(|v| values.iter().any(|w| w == v)),
            LabelRequirement::NotIn(key, values) => !label(key).is_some_and(|v| values.iter().any(|w| w == v)),
            LabelRequirement::Exists(key) => label(key).is_some(),
            LabelRequirement::NotExists(key) => label(key).is_none(),
        });
        labels_match
            && self.fields.iter().all(|(path, equal, wanted)| {
                let actual = match value_at(object, path) {
                    Some(Value::String(s)) => s.clone(),
                    None | Some(Value::Null) => String::new(),
                    Some(other) => other.to_string(),
                };
                (actual == *wanted) == *equal
            })
    }
}

fn parse_label_selector(selector: &str) -> Result<Vec<LabelRequirement>, String> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&selector[start..]);
    let key = |k: &str| {
        let k = k.trim();
        let valid = !k.is_empty() && !k.contains(|c: char| c.is_whitespace() || "!=()<>".contains(c));
        if valid { Ok(k.to_owned()) } else { Err(format!("invalid label key {k:?}")) }
    };
    let mut requirements = Vec::new();
    for part in parts.into_iter().map(str::trim).filter(|p| !p.is_empty()) {
        let requirement = if let Some(open) = part.find('(') {
            let inner = part[open + 1..].strip_suffix(')').ok_or_else(|| format!("missing ')' in {part:?}"))?;
            let values = inner.split(',').map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()).collect();
            let mut words = part[..open].split_whitespace();
            let (name, operator) = (key(words.next().unwrap_or_default())?, words.next());
            match (operator, words.next()) {
                (Some("in"), None) => LabelRequirement::In(name, values),
                (Some("notin"), None) => LabelRequirement::NotIn(name, values),
                _ => return Err(format!("invalid set requirement {part:?}")),
            }
        } else if let Some(name) = part.strip_prefix('!') {
            LabelRequirement::NotExists(key(name)?)
        } else if let Some((name, value)) = part.split_once("!=") {
            LabelRequirement::NotEquals(key(name)?, value.trim().to_owned())
        } else if let Some((name, value)) = part.split_once("==").or_else(|| part.split_once('=')) {
            LabelRequirement::Equals(key(name)?, value.trim().to_owned())
        } else {
            LabelRequirement::Exists(key(part)?)
        };
        requirements.push(requirement);
    }
    Ok(requirements)
}

/// One `metadata.managedFields` entry with the leaf paths it owns.
struct Managed {
    manager: String,
    operation: String,
    subresource: String,
    paths: BTreeSet<FieldPath>,
    raw: Value,
}

fn managed_entries(object: &Value) -> Vec<Managed> {
    let entries = object["metadata"].get("managedFields").and_then(Value::as_array);
    let text = |entry: &Value, key: &str| entry.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
    entries
        .into_iter()
        .flatten()
        .map(|entry| {
            let mut paths = BTreeSet::new();
            decode_fields(entry.get("fieldsV1").unwrap_or(&Value::Null), &mut Vec::new(), &mut paths);
            Managed {
                manager: text(entry, "manager"),
                operation: text(entry, "operation"),
                subresource: text(entry, "subresource"),
                paths,
                raw: entry.clone(),
            }
        })
        .collect()
}

/// The leaf paths of an applied object that its manager comes to own: under
/// `status` for the status subresource, everything else otherwise.
fn applied_paths(applied: &Value, status: bool) -> BTreeSet<FieldPath> {
    fn leaves(value: &Value, path: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (key, child) in map {
                    path.push(key.clone());
                    leaves(child, path, out);
                    path.pop();
                }
            }
            Value::Null => {}
            _ => {
                out.insert(path.clone());
            }
        }
    }
    let mut out = BTreeSet::new();
    for (key, value) in applied.as_object().into_iter().flatten() {
        let wanted = if status { key == "status" } else { !matches!(key.as_str(), "status" | "apiVersion" | "kind") };
        if wanted {
            leaves(value, &mut vec![key.clone()], &mut out);
        }
    }
    const SYSTEM: [&str; 10] = [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
        "selfLink",
    ];
    out.retain(|p| !(p.len() >= 2 && p[0] == "metadata" && SYSTEM.contains(&p[1].as_str())));
    out
}

/// Simplified `FieldsV1`: nested `{"f:<key>": ...}` maps, `{}` at each leaf.
fn encode_fields(paths: &BTreeSet<FieldPath>) -> Value {
    let mut root = Map::new();
    for path in paths {
        let mut node = &mut root;
        for segment in path {
            node = child_map(node, &format!("f:{segment}"));
        }
    }
    Value::Object(root)
}

fn decode_fields(value: &Value, prefix: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
    let children: Vec<(&str, &Value)> = value
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(key, child)| key.strip_prefix("f:").map(|k| (k, child)))
        .collect();
    if children.is_empty() {
        if !prefix.is_empty() {
            out.insert(prefix.clone());
        }
        return;
    }
    for (key, child) in children {
        prefix.push(key.to_owned());
        decode_fields(child, prefix, out);
        prefix.pop();
    }
}

/// Whether one path is a prefix of (or equal to) the other.
fn overlaps(a: &[String], b: &[String]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

fn value_at<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |node, key| node.as_object()?.get(key))
}

fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(value, |node, key| node.as_object()?.get(*key))?.as_str()
}

/// Removes a field, then the maps it leaves empty below the top level.
fn remove_path(object: &mut Value, path: &[String]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    let Some(Value::Object(map)) = value_at_mut(object, parent) else {
        return;
    };
    map.remove(last);
    for depth in (2..path.len()).rev() {
        let empty = matches!(value_at(object, &path[..depth]), Some(Value::Object(m)) if m.is_empty());
        if let (true, Some(Value::Object(map))) = (empty, value_at_mut(object, &path[..depth - 1])) {
            map.remove(&path[depth - 1]);
        }
    }
}

fn value_at_mut<'a>(value: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    path.iter().try_fold(value, |node, key| node.as_object_mut()?.get_mut(key))
}

/// JSON merge patch (RFC 7386).
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    let target = as_map(target);
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// The value as a map, replacing it with an empty one when it is not.
fn as_map(value: &mut Value) -> &mut Map<String, Value> {
    if !value.is_object() {
        *value = Value::Object(Map::new());
    }
    match value {
        Value::Object(map) => map,
        _ => unreachable!("just made an object"),
    }
}

/// The map under `key`, created (or replacing a non-map) when missing.
fn child_map<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    as_map(map.entry(key.to_owned()).or_insert(Value::Null))
}

fn remove_key(object: &mut Value, key: &str) {
    if let Some(map) = object.as_object_mut() {
        map.remove(key);
    }
}

fn object_name(object: &Value) -> String {
    str_at(object, &["metadata", "name"]).unwrap_or_default().to_owned()
}

fn finalizers_empty(object: &Value) -> bool {
    object["metadata"].get("finalizers").and_then(Value::as_array).is_none_or(Vec::is_empty)
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The kind of a resource nothing has been created in yet, for list kinds.
fn kind_of_plural(plural: &str) -> String {
    let known = [
        ("configmaps", "ConfigMap"),
        ("customresourcedefinitions", "CustomResourceDefinition"),
        ("databases", "Database"),
        ("ebbclusters", "EbbCluster"),
        ("endpoints", "Endpoints"),
        ("endpointslices", "EndpointSlice"),
        ("persistentvolumeclaims", "PersistentVolumeClaim"),
        ("poddisruptionbudgets", "PodDisruptionBudget"),
        ("replicasets", "ReplicaSet"),
        ("rolebindings", "RoleBinding"),
        ("serviceaccounts", "ServiceAccount"),
        ("statefulsets", "StatefulSet"),
    ];
    if let Some((_, kind)) = known.iter().find(|(p, _)| *p == plural) {
        return (*kind).to_owned();
    }
    let singular = plural
        .strip_suffix("sses")
        .map(|s| format!("{s}ss"))
        .unwrap_or_else(|| plural.strip_suffix('s').unwrap_or(plural).to_owned());
    let mut chars = singular.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}
