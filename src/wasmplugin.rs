//! Istio `WasmPlugin` resources (`extensions.istio.io/v1alpha1`): the resource model, and the
//! loader of the YAML or JSON files of them that `warm` reads to fill the cache before Envoy asks.
//!
//! Field names, types and enum spellings are those of the Istio Extensions API. Reading follows
//! the Kubernetes API server: unknown fields are ignored and `null` means absent, while enum
//! values, types, `apiVersion` and `kind` are checked. Every problem names the file, the document
//! and the field path, so an operator can find it without the schema at hand:
//!
//! ```text
//! plugins.yaml doc 2: spec.imagePullPolicy: "always" is not one of UNSPECIFIED_POLICY, IfNotPresent, Always
//! ```
//!
//! # Files
//! - YAML with one or more documents separated by `---` (or ended by `...`), or JSON with one or
//!   more concatenated values. JSON that does not parse as JSON is read as YAML, which is a
//!   superset of it, so that `---`-separated JSON documents recover one by one.
//! - A document is a `WasmPlugin`, a `WasmPluginList` (what the API server returns; its items may
//!   leave out `apiVersion` and `kind`), or a Kubernetes `v1` `List` (what `kubectl get -o yaml`
//!   prints; its items must say what they are).
//! - [`load`] returns one result per plugin, so one broken document or list item never hides the
//!   good ones: the caller warms what it can and reports the rest. Each document or item reports
//!   its first problem only.
//! - An item of another kind in a list is an error for that item alone, with
//!   [`Problem::WrongKind`] at `items[i].kind`; a caller that would rather skip such items
//!   quietly can match on that.
//! - Empty documents (nothing, only comments, or `null`) yield no result but are still counted, so
//!   `doc N` is the N-th document as a person reads the file.
//! - YAML is read as YAML 1.2: `yes`, `no`, `on` and `off` are strings, not booleans, so a label
//!   value `on` stays `on`.
//!
//! # Limits
//! The input is not trusted, so [`load`] never panics and caps the work it will do:
//! [`MAX_INPUT_BYTES`] of text, [`MAX_DOCUMENTS`] documents, [`MAX_VALUES`] values (after YAML
//! aliases are expanded) across the file, a nesting depth of 64 in YAML and 128 in JSON, and a
//! bounded number of alias expansions per YAML document (the "billion laughs" bomb).
//!
//! Long: the Istio WasmPlugin API as the OpenAPI schema in ../shared declares it (types, enums, defaults), with the checks that go beyond types and the file loader.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use serde_path_to_error::Segment;

use crate::policy::PullPolicy;

#[cfg(test)]
mod tests;

/// The only `apiVersion` of a `WasmPlugin` (and of a `WasmPluginList`) that is accepted.
pub(crate) const API_VERSION: &str = "extensions.istio.io/v1alpha1";
/// The `kind` of a single plugin.
pub(crate) const KIND: &str = "WasmPlugin";
/// The `kind` of the list the API server returns.
pub(crate) const LIST_KIND: &str = "WasmPluginList";
/// The `apiVersion` of a generic Kubernetes `List`.
pub(crate) const CORE_LIST_API_VERSION: &str = "v1";
/// The `kind` of the generic list that `kubectl get -o yaml` prints.
pub(crate) const CORE_LIST_KIND: &str = "List";

/// Largest file [`load`] reads. Real plugin files are kilobytes, and a dump of a thousand plugins
/// is a few megabytes. It also bounds what one JSON document can build before [`MAX_VALUES`] is
/// checked (JSON has no per-document budget): 8 MiB of `[0,0,...]` is 4 million values.
pub(crate) const MAX_INPUT_BYTES: usize = 8 * 1024 * 1024;
/// Most documents [`load`] reads from one file; documents after it are not read.
pub(crate) const MAX_DOCUMENTS: usize = 10_000;
/// Most values (mappings, sequences and scalars, after alias expansion) [`load`] builds from one
/// file, which bounds its memory whatever the file's shape.
pub(crate) const MAX_VALUES: usize = 2_000_000;
/// Most events one YAML document may replay through aliases. An honest document replays a few
/// dozen; an alias bomb replays billions.
const MAX_ALIAS_REPLAY_EVENTS: usize = 100_000;

/// The caps [`load`] works within; tests use smaller ones to reach them cheaply.
#[derive(Debug, Clone, Copy)]
struct Limits {
    input_bytes: usize,
    documents: usize,
    values: usize,
}

const LIMITS: Limits = Limits {
    input_bytes: MAX_INPUT_BYTES,
    documents: MAX_DOCUMENTS,
    values: MAX_VALUES,
};

/// What the `kind` of a document may be, for the error when it is none of them.
const DOCUMENT_KINDS: &str = "WasmPlugin, WasmPluginList or List";

/// A `WasmPlugin` resource: one Wasm module and where Envoy runs it.
///
/// Build one with [`load`] (checked, per-document errors) or serde's `Deserialize` (checked, first
/// error as a message naming the field path). Serializing it gives the API's JSON back, with
/// absent optional fields left out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", try_from = "Value")]
pub struct WasmPlugin {
    /// Always [`API_VERSION`] once loaded.
    pub api_version: String,
    /// Always [`KIND`] once loaded.
    pub kind: String,
    /// Loaded plugins always have a non-empty `name`.
    pub metadata: ObjectMeta,
    pub spec: WasmPluginSpec,
}

/// The Kubernetes metadata the cache uses; other fields (`uid`, `managedFields`, ...) are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Absent or empty means `default`, as in Kubernetes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// RFC 3339, kept as text: the cache only passes it along.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    /// Changes on every update of the resource; the cache uses it to notice that a plugin changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
}

/// What the plugin is and where it runs. Only `url` is required.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WasmPluginSpec {
    /// Which workloads get the plugin; absent means every workload in the namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// Where the module comes from: `oci://`, `file://`, `http://` or `https://`. Never empty once
    /// loaded.
    #[serde(default, deserialize_with = "non_blank")]
    pub url: String,
    /// Expected sha256 of the module (or of the image manifest), hex; absent means not checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<ImagePullPolicy>,
    /// Name of a Kubernetes secret in the plugin's namespace holding registry credentials.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_pull_secret: Option<String>,
    /// Passed to the plugin as is; its shape belongs to the plugin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin_config: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<PluginPhase>,
    /// Ordering within a phase, higher first. `null` in a file is the same as absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fail_strategy: Option<FailStrategy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vm_config: Option<VmConfig>,
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    pub r#match: Option<Vec<TrafficSelector>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_refs: Option<Vec<PolicyTargetReference>>,
}

/// `spec.selector`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSelector {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub match_labels: Option<BTreeMap<String, String>>,
}

/// `spec.vmConfig`: the Wasm VM the plugin runs in.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VmConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<EnvVar>>,
}

/// `spec.vmConfig.env[]`: an environment variable of the Wasm VM.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvValueSource>,
    /// The value itself for `INLINE`; unused for `HOST`, which reads the proxy's environment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// `spec.match[]`: which traffic the plugin sees.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficSelector {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<WorkloadMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<PortSelector>>,
}

/// `spec.match[].ports[]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortSelector {
    /// `u32` as in Istio's `PortSelector`: a negative port is a mistake worth reporting.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number: Option<u32>,
}

/// `spec.targetRefs[]`: a Gateway API style reference to what the plugin attaches to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyTargetReference {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Defines an API string enum: the variants with their exact API spellings, which are also what
/// serde reads and writes and what error messages list.
macro_rules! api_enum {
    (
        $(#[$meta:meta])*
        $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in the API's order.
            #[cfg(test)]
            pub(crate) const ALL: &'static [$name] = &[$($name::$variant),+];
            /// Every spelling, in the API's order: what an error message lists.
            pub(crate) const NAMES: &'static [&'static str] = &[$($text),+];

            /// The API spelling.
            pub(crate) fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }

            /// The value spelled exactly `text`; the API is case-sensitive.
            pub(crate) fn from_api(text: &str) -> Option<Self> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        /// By hand rather than derived, for a message that lists the values and cuts a long wrong one
        /// short (serde's repeats it whole).
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                $name::from_api(&text).ok_or_else(|| {
                    D::Error::custom(format_args!("{} is not one of {}", quote(&text), $name::NAMES.join(", ")))
                })
            }
        }
    };
}

api_enum! {
    /// `spec.imagePullPolicy`, as written in the resource. The cache's own rule is
    /// [`PullPolicy`]; [`WasmPlugin::pull_policy`] maps one to the other.
    ImagePullPolicy {
        /// Always for an OCI `latest` tag (or no tag), IfNotPresent otherwise.
        #[default]
        UnspecifiedPolicy = "UNSPECIFIED_POLICY",
        IfNotPresent = "IfNotPresent",
        Always = "Always",
    }
}

api_enum! {
    /// `spec.phase`: where in Envoy's filter chain the plugin goes.
    PluginPhase {
        /// Before the router, after Istio's own filters.
        #[default]
        UnspecifiedPhase = "UNSPECIFIED_PHASE",
        Authn = "AUTHN",
        Authz = "AUTHZ",
        Stats = "STATS",
    }
}

api_enum! {
    /// `spec.failStrategy`: what the proxy does when the module cannot be fetched or fails.
    FailStrategy {
        /// Reject traffic the plugin would have seen.
        #[default]
        FailClose = "FAIL_CLOSE",
        /// Let traffic through as if the plugin were not there.
        FailOpen = "FAIL_OPEN",
    }
}

api_enum! {
    /// `spec.vmConfig.env[].valueFrom`.
    EnvValueSource {
        /// The value is `value`.
        #[default]
        Inline = "INLINE",
        /// The value is the proxy's environment variable of the same name.
        Host = "HOST",
    }
}

api_enum! {
    /// `spec.match[].mode`: which side of the connection the plugin applies to.
    WorkloadMode {
        /// Both sides.
        #[default]
        Undefined = "UNDEFINED",
        Client = "CLIENT",
        Server = "SERVER",
        ClientAndServer = "CLIENT_AND_SERVER",
    }
}

impl From<ImagePullPolicy> for PullPolicy {
    fn from(policy: ImagePullPolicy) -> Self {
        match policy {
            ImagePullPolicy::UnspecifiedPolicy => PullPolicy::Unspecified,
            ImagePullPolicy::IfNotPresent => PullPolicy::IfNotPresent,
            ImagePullPolicy::Always => PullPolicy::Always,
        }
    }
}

impl WasmPlugin {
    /// `namespace/name`, the key the cache records the plugin's last fetch under. The namespace
    /// defaults to `default` as in Kubernetes, so a file without namespaces and the cluster agree.
    pub(crate) fn resource_name(&self) -> String {
        let namespace = match self.metadata.namespace.as_deref() {
            None | Some("") => "default",
            Some(namespace) => namespace,
        };
        let name = self.metadata.name.as_deref().unwrap_or_default();
        format!("{namespace}/{name}")
    }

    /// `metadata.resourceVersion`, or empty when absent (as in a hand-written file).
    pub(crate) fn resource_version(&self) -> String {
        self.metadata.resource_version.clone().unwrap_or_default()
    }

    /// Reads one plugin from the API server, checked like [`load`] does, where `apiVersion` and
    /// `kind` may be absent (items of a `WasmPluginList`, objects from a typed watch); present,
    /// they must be right.
    pub(crate) fn from_api_object(mut value: Value) -> Result<Self, FieldError> {
        default_plugin_type(&mut value);
        decode_plugin(value, "")
    }

    /// The Secret named by `spec.imagePullSecret`, in the plugin's namespace; `None` when absent or empty.
    pub(crate) fn image_pull_secret(&self) -> Option<&str> {
        self.spec.image_pull_secret.as_deref().filter(|s| !s.is_empty())
    }

    /// The cache's pull policy for this plugin; an absent `imagePullPolicy` is `Unspecified`.
    pub(crate) fn pull_policy(&self) -> PullPolicy {
        self.spec.image_pull_policy.unwrap_or_default().into()
    }
}

/// Why a document of a file, or an item of a list in it, yielded no plugin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PluginError {
    /// The document parsed but is not a valid `WasmPlugin` (or list of them).
    #[error("{file} doc {doc}: {error}")]
    Invalid {
        file: String,
        /// Counted from 1, including empty documents.
        doc: usize,
        error: FieldError,
    },
    /// The document is not well-formed YAML or JSON, or breaks a parser limit (depth, aliases).
    #[error("{file} doc {doc}: invalid {format}: {message}")]
    Syntax {
        file: String,
        doc: usize,
        /// `YAML` or `JSON`.
        format: &'static str,
        /// Line in the file, counted from 1, when the parser knows it; `message` says it too.
        line: Option<u64>,
        message: String,
    },
    /// The file is larger than [`MAX_INPUT_BYTES`]; nothing was read.
    #[error("{file}: {size} bytes is more than the {limit} bytes accepted")]
    TooLarge { file: String, size: usize, limit: usize },
    /// The file holds more than [`MAX_DOCUMENTS`] documents; the ones after the limit were not read.
    #[error("{file}: more than {limit} documents; the rest were not read")]
    TooManyDocuments { file: String, limit: usize },
    /// The file holds more than [`MAX_VALUES`] values; this document and the rest were not read.
    #[error("{file} doc {doc}: more than {limit} values in the file; this document and the rest were not read")]
    TooManyValues { file: String, doc: usize, limit: usize },
}

impl PluginError {
    /// The document the error is about, when it is about one.
    pub(crate) fn doc(&self) -> Option<usize> {
        match self {
            PluginError::Invalid { doc, .. }
            | PluginError::Syntax { doc, .. }
            | PluginError::TooManyValues { doc, .. } => Some(*doc),
            PluginError::TooLarge { .. } | PluginError::TooManyDocuments { .. } => None,
        }
    }
}

/// Where in its file [`load_located`] read a plugin: the document (counted from 1) and, for an item of a
/// list document, the item's index. Problems found with the plugin after loading are reported at it in
/// the form of [`load`]'s own errors (`plugins.yaml doc 2: items[1].spec.url: ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Location {
    pub file: String,
    pub doc: usize,
    /// `Some(i)` for `items[i]` of a list document; `None` for a document that is the plugin itself.
    pub item: Option<usize>,
}

impl Location {
    /// A problem at `field` of the plugin read here: `field` is a path within the plugin (`spec.sha256`).
    pub(crate) fn error(&self, field: &str, problem: Problem) -> PluginError {
        let path = match self.item {
            Some(index) => format!("items[{index}].{field}"),
            None => field.to_owned(),
        };
        PluginError::Invalid {
            file: self.file.clone(),
            doc: self.doc,
            error: FieldError { path, problem },
        }
    }
}

/// A problem at one field of a resource: `spec.match[0].mode: "BOTH" is not one of ...`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{problem}", path_prefix(.path))]
pub struct FieldError {
    /// As `kubectl` writes it: `spec.match[0].ports[1].number`, `items[2].kind`,
    /// `metadata.labels["app.kubernetes.io/name"]`; empty for the document itself.
    pub path: String,
    pub problem: Problem,
}

/// What is wrong at a field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("required field is missing")]
    Missing,
    #[error("must not be empty")]
    Empty,
    /// Not of the field's type, or not one of an enum's values: serde's message (`invalid type: string
    /// "high", expected i64`, `"always" is not one of ...`), with a long value cut short.
    #[error("{message}")]
    Invalid { message: String },
    #[error("expected {expected}, found {found}")]
    WrongApiVersion { expected: &'static str, found: String },
    /// The document or list item is some other resource.
    #[error("expected {expected}, found {found}")]
    WrongKind { expected: &'static str, found: String },
    /// A value the resource's schema allows but a fetch request may not carry (found after loading, by
    /// the daemon's own request checks): `reason` is the daemon's.
    #[error("{reason}")]
    Refused { reason: String },
}

impl FieldError {
    fn new(path: &str, problem: Problem) -> Self {
        FieldError {
            path: path.to_owned(),
            problem,
        }
    }
}

fn path_prefix(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("{path}: ")
    }
}

/// Reads every `WasmPlugin` in `text`, one result per plugin (or per document or list item that
/// failed), in file order. `source_name` names the file in error messages.
///
/// See the module documentation for the formats, the error reporting and the limits.
pub fn load(source_name: &str, text: &str) -> Vec<Result<WasmPlugin, PluginError>> {
    load_within(source_name, text, LIMITS)
}

/// [`load`], with the [`Location`] of each plugin read, for reporting problems found with it later.
pub(crate) fn load_located(source_name: &str, text: &str) -> Vec<Result<(Location, WasmPlugin), PluginError>> {
    located_within(source_name, text, LIMITS)
}

fn load_within(source_name: &str, text: &str, limits: Limits) -> Vec<Result<WasmPlugin, PluginError>> {
    located_within(source_name, text, limits)
        .into_iter()
        .map(|result| result.map(|(_, plugin)| plugin))
        .collect()
}

fn located_within(source_name: &str, text: &str, limits: Limits) -> Vec<Result<(Location, WasmPlugin), PluginError>> {
    let mut loader = Loader {
        file: source_name,
        limits,
        results: Vec::new(),
        values: 0,
    };
    if text.len() > limits.input_bytes {
        loader.results.push(Err(PluginError::TooLarge {
            file: source_name.to_owned(),
            size: text.len(),
            limit: limits.input_bytes,
        }));
        return loader.results;
    }
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if !(looks_like_json(text) && loader.read_json(text)) {
        loader.read_yaml(text);
    }
    loader.results
}

/// One call to [`load`]: its results so far, and the values built so far.
struct Loader<'a> {
    file: &'a str,
    limits: Limits,
    results: Vec<Result<(Location, WasmPlugin), PluginError>>,
    values: usize,
}

impl Loader<'_> {
    /// Reads `text` as a stream of JSON values. Returns false, having added nothing, when it is
    /// not well-formed JSON: then it is read as YAML, which recovers at each `---` and knows more
    /// syntax (comments, trailing commas) than JSON.
    fn read_json(&mut self, text: &str) -> bool {
        let mut documents = Vec::new();
        let mut too_many = false;
        for value in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
            match value {
                Ok(_) if documents.len() == self.limits.documents => {
                    too_many = true;
                    break;
                }
                Ok(value) => documents.push(value),
                Err(_) => return false,
            }
        }
        for (index, value) in documents.into_iter().enumerate() {
            if !self.accept(index + 1, value) {
                return true;
            }
        }
        if too_many {
            self.too_many_documents();
        }
        true
    }

    /// Reads `text` as YAML, one document at a time, so a syntax error in one document is
    /// reported for it alone.
    fn read_yaml(&mut self, text: &str) {
        for (index, chunk) in YamlDocuments::new(text).enumerate() {
            let doc = index + 1;
            if doc > self.limits.documents {
                self.too_many_documents();
                return;
            }
            match serde_saphyr::from_str_with_options::<Value>(chunk.text, yaml_options()) {
                Ok(value) => {
                    if !self.accept(doc, value) {
                        return;
                    }
                }
                Err(error) => {
                    // The parser counts lines from the start of the chunk; the file's reader
                    // counts from the start of the file.
                    let offset = chunk.first_line - 1;
                    let line = error
                        .location()
                        .map(|l| l.line())
                        .filter(|&l| l > 0)
                        .map(|l| l + offset);
                    let message = error.render_with_options(serde_saphyr::render_options! {
                        snippets: serde_saphyr::SnippetMode::Off,
                        line_offset: offset,
                    });
                    self.results.push(Err(PluginError::Syntax {
                        file: self.file.to_owned(),
                        doc,
                        format: "YAML",
                        line,
                        message,
                    }));
                }
            }
        }
    }

    /// Adds the plugins of one parsed document. Returns false when the file is over its
    /// values limit and reading must stop.
    fn accept(&mut self, doc: usize, value: Value) -> bool {
        if value.is_null() {
            return true;
        }
        self.values = self.values.saturating_add(count_values(&value));
        if self.values > self.limits.values {
            self.results.push(Err(PluginError::TooManyValues {
                file: self.file.to_owned(),
                doc,
                limit: self.limits.values,
            }));
            return false;
        }
        let file = self.file;
        // A list yields one result per item, in order (or one error for the list itself).
        let in_list = matches!(document_kind(&value), Some(LIST_KIND | CORE_LIST_KIND));
        self.results.extend(
            plugins_in_document(value)
                .into_iter()
                .enumerate()
                .map(|(index, result)| match result {
                    Ok(plugin) => Ok((
                        Location {
                            file: file.to_owned(),
                            doc,
                            item: in_list.then_some(index),
                        },
                        plugin,
                    )),
                    Err(error) => Err(PluginError::Invalid {
                        file: file.to_owned(),
                        doc,
                        error,
                    }),
                }),
        );
        true
    }

    fn too_many_documents(&mut self) {
        self.results.push(Err(PluginError::TooManyDocuments {
            file: self.file.to_owned(),
            limit: self.limits.documents,
        }));
    }
}

/// JSON starts with an object or an array; YAML rarely does, and when it does (a flow mapping)
/// the JSON reader fails and the YAML reader takes over.
fn looks_like_json(text: &str) -> bool {
    matches!(text.trim_start().as_bytes().first(), Some(b'{' | b'['))
}

fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        // Only the message is wanted: the loader adds the file and document itself.
        with_snippet: false,
        // YAML 1.2, as the module documentation says: `on` is a string.
        strict_booleans: true,
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: MAX_ALIAS_REPLAY_EVENTS,
        },
    }
}

/// The values in `value`, itself included.
fn count_values(value: &Value) -> usize {
    let mut count = 0;
    let mut pending = vec![value];
    while let Some(value) = pending.pop() {
        count += 1;
        match value {
            Value::Array(items) => pending.extend(items),
            Value::Object(fields) => pending.extend(fields.values()),
            _ => {}
        }
    }
    count
}

/// The plugins of one non-empty document: one result for a `WasmPlugin`, one per item for a
/// list, or one error when the document is neither.
fn plugins_in_document(value: Value) -> Vec<Result<WasmPlugin, FieldError>> {
    match document_kind(&value) {
        Some(LIST_KIND) => list_items(value, LIST_KIND, API_VERSION, true),
        Some(CORE_LIST_KIND) => list_items(value, CORE_LIST_KIND, CORE_LIST_API_VERSION, false),
        // A missing or non-string kind, or a document that is not a mapping, is reported by the
        // plugin's own checks.
        Some(KIND) | None => vec![decode_plugin(value, "")],
        Some(other) => vec![Err(FieldError::new(
            "kind",
            Problem::WrongKind {
                expected: DOCUMENT_KINDS,
                found: quote(other),
            },
        ))],
    }
}

/// The `kind` of a document, when it is a mapping with a string `kind`.
fn document_kind(value: &Value) -> Option<&str> {
    match value {
        Value::Object(fields) => fields.get("kind").and_then(Value::as_str),
        _ => None,
    }
}

/// The items of a list document, each its own result; a problem with the list itself is one error.
fn list_items(
    value: Value,
    kind: &'static str,
    api_version: &'static str,
    items_default_to_plugins: bool,
) -> Vec<Result<WasmPlugin, FieldError>> {
    match read_list(value, kind, api_version, items_default_to_plugins) {
        Ok(items) => items,
        Err(error) => vec![Err(error)],
    }
}

/// The list's own fields, as serde reads them; the items stay values until each is decoded alone.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", expecting = "an object")]
struct ListFields {
    kind: Option<String>,
    api_version: Option<String>,
    /// Checked for its shape only: nothing resumes a list read from a file.
    #[serde(default, rename = "metadata", deserialize_with = "null_as_default")]
    _metadata: ListMeta,
    #[serde(default, deserialize_with = "null_as_default")]
    items: Vec<Value>,
}

/// The metadata of a list, as the API server writes it: where a paginated list call resumes.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListMeta {
    #[serde(rename = "resourceVersion")]
    _resource_version: Option<String>,
    #[serde(rename = "continue")]
    _continue: Option<String>,
}

fn read_list(
    value: Value,
    kind: &'static str,
    api_version: &'static str,
    items_default_to_plugins: bool,
) -> Result<Vec<Result<WasmPlugin, FieldError>>, FieldError> {
    let fields: ListFields = decode(value, "")?;
    expect(fields.kind, "kind", kind, |expected, found| Problem::WrongKind {
        expected,
        found,
    })?;
    expect(fields.api_version, "apiVersion", api_version, |expected, found| {
        Problem::WrongApiVersion { expected, found }
    })?;
    Ok(fields
        .items
        .into_iter()
        .enumerate()
        .map(|(index, mut item)| {
            if items_default_to_plugins {
                default_plugin_type(&mut item);
            }
            decode_plugin(item, &format!("items[{index}]"))
        })
        .collect())
}

/// Fills in the `apiVersion` and `kind` of a plugin that leaves them out, as the API server may for
/// the items of a typed list; a type that is present is left for the checks to judge.
fn default_plugin_type(value: &mut Value) {
    if let Value::Object(fields) = value {
        for (key, default) in [("apiVersion", API_VERSION), ("kind", KIND)] {
            if fields.get(key).is_none_or(Value::is_null) {
                fields.insert(key.to_owned(), Value::from(default));
            }
        }
    }
}

/// What a plugin is and what it is called: read before the rest, so that a document of another kind,
/// or one without a name, is reported as such rather than by the first field of its spec that fails.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", expecting = "an object")]
struct PluginHead {
    kind: Option<String>,
    api_version: Option<String>,
    metadata: Option<HeadMeta>,
}

#[derive(Deserialize)]
#[serde(expecting = "an object")]
struct HeadMeta {
    name: Option<String>,
}

/// The rest of a plugin, once its head has passed.
#[derive(Deserialize)]
struct PluginBody {
    #[serde(default, deserialize_with = "null_as_default")]
    metadata: ObjectMeta,
    /// Without a spec, what is missing is its one required field.
    #[serde(default, deserialize_with = "null_as_default")]
    spec: WasmPluginSpec,
}

/// Reads one plugin at `at` (empty for a document, `items[i]` for a list item), checked in the order a
/// reader looks: what it is (`kind`, `apiVersion`), then its name, then its spec.
fn decode_plugin(value: Value, at: &str) -> Result<WasmPlugin, FieldError> {
    let head: PluginHead = decode(&value, at)?;
    let kind = expect(head.kind, &child(at, "kind"), KIND, |expected, found| {
        Problem::WrongKind { expected, found }
    })?;
    let api_version = expect(
        head.api_version,
        &child(at, "apiVersion"),
        API_VERSION,
        |expected, found| Problem::WrongApiVersion { expected, found },
    )?;
    let name_at = child(&child(at, "metadata"), "name");
    match head.metadata.and_then(|m| m.name) {
        None => return Err(FieldError::new(&name_at, Problem::Missing)),
        Some(name) if name.trim().is_empty() => return Err(FieldError::new(&name_at, Problem::Empty)),
        Some(_) => {}
    }
    let body: PluginBody = decode(value, at)?;
    // A blank url was refused while decoding (`non_blank`); an empty one here was absent or null.
    if body.spec.url.is_empty() {
        return Err(FieldError::new(&child(&child(at, "spec"), "url"), Problem::Missing));
    }
    Ok(WasmPlugin {
        api_version,
        kind,
        metadata: body.metadata,
        spec: body.spec,
    })
}

impl TryFrom<Value> for WasmPlugin {
    type Error = FieldError;

    /// What `Deserialize` does: the checks and messages of [`load`], without the file and document, which
    /// serde does not know.
    fn try_from(value: Value) -> Result<Self, FieldError> {
        decode_plugin(value, "")
    }
}

/// Deserializes a `T` from `input`, which sits at `at` in the document; an error names the path of the
/// field it is about.
fn decode<'de, T, D>(input: D, at: &str) -> Result<T, FieldError>
where
    T: Deserialize<'de>,
    D: Deserializer<'de, Error = serde_json::Error>,
{
    serde_path_to_error::deserialize(input).map_err(|error| {
        let mut path = at.to_owned();
        for segment in error.path() {
            match segment {
                Segment::Seq { index } => path.push_str(&format!("[{index}]")),
                Segment::Map { key } | Segment::Enum { variant: key } => path = child(&path, key),
                Segment::Unknown => {}
            }
        }
        let message = shortened(&error.into_inner().to_string());
        FieldError::new(&path, Problem::Invalid { message })
    })
}

/// `path.key` as `kubectl` writes it: a key that is not a plain name goes in brackets and quotes
/// (`metadata.labels["app.kubernetes.io/name"]`).
fn child(path: &str, key: &str) -> String {
    let plain = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !plain {
        format!("{path}[{}]", quote(key))
    } else if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// A required string field that must be exactly `expected` (`kind`, `apiVersion`).
fn expect(
    found: Option<String>,
    path: &str,
    expected: &'static str,
    wrong: fn(&'static str, String) -> Problem,
) -> Result<String, FieldError> {
    match found {
        None => Err(FieldError::new(path, Problem::Missing)),
        Some(text) if text != expected => Err(FieldError::new(path, wrong(expected, quote(&text)))),
        Some(text) => Ok(text),
    }
}

/// A field whose `null` means absent, as in Kubernetes, for a type that is not an `Option`.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// A required text field: blank is refused here, where serde knows the path; absent (or `null`) reads as
/// empty, for [`decode_plugin`] to report as missing.
fn non_blank<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    match Option::<String>::deserialize(deserializer)? {
        Some(text) if text.trim().is_empty() => Err(D::Error::custom(Problem::Empty)),
        text => Ok(text.unwrap_or_default()),
    }
}

/// A string as JSON quotes it, cut short so that a huge value cannot flood a log line.
fn quote(text: &str) -> String {
    const MAX_CHARS: usize = 80;
    match text.char_indices().nth(MAX_CHARS) {
        None => Value::from(text).to_string(),
        Some((end, _)) => Value::from(format!("{}...", &text[..end])).to_string(),
    }
}

/// A serde message, which quotes a wrong value whole: its start and its end (what was expected), without
/// the middle of a long one.
fn shortened(message: &str) -> String {
    const HEAD_CHARS: usize = 120;
    const TAIL_CHARS: usize = 80;
    let chars = message.chars().count();
    if chars <= HEAD_CHARS + TAIL_CHARS {
        return message.to_owned();
    }
    let head: String = message.chars().take(HEAD_CHARS).collect();
    let tail: String = message.chars().skip(chars - TAIL_CHARS).collect();
    format!("{head}...{tail}")
}

/// One YAML document's text, cut from the file at its document markers.
struct Chunk<'a> {
    text: &'a str,
    /// Line of the file the chunk starts on, counted from 1.
    first_line: u64,
}

/// Cuts a YAML stream into documents at the lines that start with `---` or `...`.
///
/// YAML forbids such lines inside any node, block scalars and quoted strings included, so cutting
/// there agrees with the parser; and each document can then be parsed alone, which keeps a syntax
/// error in one from swallowing the rest. Directives and comments before a `---` go with the
/// document it starts; text with no document in it (comments after a `...`) is no document.
struct YamlDocuments<'a> {
    text: &'a str,
    /// Byte offset of the next unread line.
    pos: usize,
    /// Line number of `pos`, from 1.
    line: u64,
}

impl<'a> YamlDocuments<'a> {
    fn new(text: &'a str) -> Self {
        YamlDocuments { text, pos: 0, line: 1 }
    }
}

impl<'a> Iterator for YamlDocuments<'a> {
    type Item = Chunk<'a>;

    fn next(&mut self) -> Option<Chunk<'a>> {
        let mut start = self.pos;
        let mut first_line = self.line;
        let mut has_start_marker = false;
        let mut has_content = false;
        while self.pos < self.text.len() {
            let rest = &self.text[self.pos..];
            let (line, next) = match rest.find('\n') {
                Some(end) => (&rest[..end], self.pos + end + 1),
                None => (rest, self.text.len()),
            };
            if is_marker(line, "---") {
                if has_start_marker || has_content {
                    // This line starts the next document.
                    return Some(Chunk {
                        text: &self.text[start..self.pos],
                        first_line,
                    });
                }
                has_start_marker = true;
            } else if is_marker(line, "...") {
                let end = next;
                self.pos = next;
                self.line += 1;
                if has_start_marker || has_content {
                    return Some(Chunk {
                        text: &self.text[start..end],
                        first_line,
                    });
                }
                // Nothing but comments or directives before the end marker: no document.
                start = self.pos;
                first_line = self.line;
                continue;
            } else if !has_start_marker && is_content(line) {
                has_content = true;
            }
            self.pos = next;
            self.line += 1;
        }
        (has_start_marker || has_content).then(|| Chunk {
            text: &self.text[start..],
            first_line,
        })
    }
}

/// A document marker line: the marker at column 0, then nothing or whitespace.
fn is_marker(line: &str, marker: &str) -> bool {
    line.strip_prefix(marker)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r']))
}

/// A line outside any document marker that starts a bare document: not blank, a comment or a
/// directive.
fn is_content(line: &str) -> bool {
    let line = line.strip_prefix('\u{feff}').unwrap_or(line);
    let trimmed = line.trim_start();
    !(trimmed.is_empty() || trimmed.starts_with('#') || line.starts_with('%'))
}
