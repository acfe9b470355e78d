//! `wasmcache warm`: prefetch the modules of Istio WasmPlugin resources, from files or from the
//! cluster, with a progress bar per module on a terminal (plain lines otherwise) and a summary table.

use std::collections::HashMap;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::{outcome_name, CliError, SocketArg};
use crate::cache::{Request, RequestField};
use crate::cluster::{self, Scope};
use crate::proto::{warm_event::Event, WarmItem, WarmRequest};
use crate::service;
use crate::warm::{self, Secrets};
use crate::wasmplugin::{self, Problem, WasmPlugin};

#[derive(Debug, clap::Args)]
// Plugins come from files, from the cluster, or both; with neither there is nothing to do, which is a
// wrong command line (exit 64 with the usage), not a failed warm-up.
#[group(id = "input", required = true, multiple = true, args = ["files", "from_cluster"])]
pub(crate) struct Args {
    #[command(flatten)]
    pub socket: SocketArg,
    /// WasmPlugin YAML or JSON file (multi-document; WasmPlugin, WasmPluginList or List), a directory of
    /// them (*.yaml, *.yml, *.json), or - for stdin (repeatable)
    #[arg(short = 'f', long = "filename", value_name = "FILE|DIR|-")]
    pub files: Vec<PathBuf>,
    /// Directory of image pull secrets: DIR/NAMESPACE/NAME holds a .dockerconfigjson or a Secret manifest
    #[arg(long, value_name = "DIR")]
    pub pull_secret_dir: Option<PathBuf>,
    /// List WasmPlugins (and read their pull secrets) from the Kubernetes API
    #[arg(long)]
    pub from_cluster: bool,
    /// Namespace to list with --from-cluster [default: the kubeconfig's namespace, else default]
    #[arg(
        short = 'n',
        long,
        value_name = "NS",
        conflicts_with = "all_namespaces",
        requires = "from_cluster"
    )]
    pub namespace: Option<String>,
    /// List WasmPlugins of every namespace with --from-cluster
    #[arg(short = 'A', long, requires = "from_cluster")]
    pub all_namespaces: bool,
    /// Label selector for --from-cluster (e.g. app=gateway,tier!=dev)
    #[arg(short = 'l', long, value_name = "LABELS", requires = "from_cluster")]
    pub selector: Option<String>,
    /// Kubeconfig for --from-cluster [default: in-cluster service account, $KUBECONFIG, ~/.kube/config]
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Read the resources and their pull secrets and check each request as the daemon would; contact no daemon, fetch nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Modules fetched at the same time, 1 to 64
    // The daemon caps `concurrency` at its bound and reads 0 as its default: out of range here, a value
    // would be silently changed, so it is a usage error instead.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 4,
        value_parser = clap::value_parser!(u32).range(1..=crate::service::MAX_WARM_CONCURRENCY as i64)
    )]
    pub concurrency: u32,
}

/// One line of the summary.
struct Row {
    plugin: String,
    url: String,
    digest: String,
    outcome: String,
    elapsed: Option<Duration>,
    failed: bool,
}

impl Row {
    fn failed(plugin: String, url: String, message: String) -> Row {
        Row {
            plugin,
            url,
            digest: String::new(),
            outcome: format!("FAILED: {message}"),
            elapsed: None,
            failed: true,
        }
    }
}

pub(crate) async fn run(args: Args) -> Result<(), CliError> {
    let mut rows: Vec<Row> = Vec::new();
    let mut plugins: Vec<(Origin, WasmPlugin)> = Vec::new();
    for path in &args.files {
        for (name, text) in read_inputs(path)? {
            for result in wasmplugin::load_located(&name, &text) {
                match result {
                    Ok((location, plugin)) => plugins.push((Origin::File(location), plugin)),
                    Err(e) => rows.push(Row::failed(
                        format!("{name} doc {}", e.doc().unwrap_or(0)),
                        String::new(),
                        e.to_string(),
                    )),
                }
            }
        }
    }
    let client = if args.from_cluster {
        let client = cluster::client(args.kubeconfig.as_deref())
            .await
            .map_err(|e| CliError(e.to_string()))?;
        let scope = Scope {
            namespace: if args.all_namespaces {
                None
            } else {
                Some(
                    args.namespace
                        .clone()
                        .unwrap_or_else(|| client.default_namespace().to_string()),
                )
            },
            selector: args.selector.clone(),
        };
        for value in cluster::list_wasmplugins(&client, &scope)
            .await
            .map_err(|e| CliError(e.to_string()))?
        {
            let name = object_name(&value);
            match WasmPlugin::from_api_object(value) {
                Ok(plugin) => plugins.push((Origin::Cluster(name), plugin)),
                Err(e) => rows.push(Row::failed(name.clone(), String::new(), format!("cluster {name}: {e}"))),
            }
        }
        Some(client)
    } else {
        None
    };
    let secrets = match (&client, &args.pull_secret_dir) {
        (_, Some(dir)) => Secrets::Dir(dir),
        (Some(client), None) => Secrets::Cluster(client),
        (None, None) => Secrets::None,
    };
    let mut items = Vec::new();
    for (origin, plugin) in &plugins {
        let refused = |field: &str, reason: String| {
            Row::failed(
                plugin.resource_name(),
                plugin.spec.url.clone(),
                origin.problem(field, reason),
            )
        };
        let request = match warm::request_for(plugin, secrets).await {
            Ok(request) => request,
            Err(e) => {
                rows.push(refused("spec.imagePullSecret", e.problem.to_string()));
                continue;
            }
        };
        // The daemon's own checks, so that what it would refuse is refused here, before anything is sent
        // (and with --dry-run, without a daemon at all), and named at the plugin's field.
        if let Err(refusal) = Request::parse(&request) {
            rows.push(refused(spec_field(refusal.field), refusal.reason()));
            continue;
        }
        items.push(WarmItem {
            id: plugin.resource_name(),
            request: Some(service::wire_request(request)),
        });
    }
    if args.dry_run {
        for item in &items {
            let url = item.request.as_ref().map(|r| r.url.clone()).unwrap_or_default();
            rows.push(Row {
                plugin: item.id.clone(),
                url,
                digest: String::new(),
                outcome: "VALID".into(),
                elapsed: None,
                failed: false,
            });
        }
    } else if !items.is_empty() {
        rows.extend(warm_items(&args, items).await?);
    }
    print_summary(&rows);
    let failed = rows.iter().filter(|r| r.failed).count();
    if failed > 0 {
        return Err(CliError(format!("{failed} of {} plugin(s) failed", rows.len())));
    }
    Ok(())
}

/// Where a plugin was read, for reporting what is found wrong with it after loading as the loader reports
/// its own errors: `plugins.yaml doc 2: spec.sha256: ...`, `cluster team-a/authz: spec.url: ...`.
enum Origin {
    File(wasmplugin::Location),
    /// `namespace/name` of a plugin listed from the cluster.
    Cluster(String),
}

impl Origin {
    fn problem(&self, field: &str, reason: String) -> String {
        match self {
            Origin::File(location) => location.error(field, Problem::Refused { reason }).to_string(),
            Origin::Cluster(name) => format!("cluster {name}: {field}: {reason}"),
        }
    }
}

/// The WasmPlugin field a fetch request's field comes from (see `warm::request_for`).
fn spec_field(field: RequestField) -> &'static str {
    match field {
        RequestField::Url => "spec.url",
        RequestField::Sha256 => "spec.sha256",
        RequestField::PullPolicy => "spec.imagePullPolicy",
        RequestField::PullSecret => "spec.imagePullSecret",
    }
}

/// `(name, text)` of every input: a file, the YAML and JSON files of a directory (sorted), or stdin.
fn read_inputs(path: &Path) -> Result<Vec<(String, String)>, CliError> {
    let read_err = |p: &Path, e: std::io::Error| CliError(format!("reading {}: {e}", p.display()));
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| read_err(path, e))?;
        return Ok(vec![("stdin".into(), text)]);
    }
    let mut files = Vec::new();
    if path.is_dir() {
        for entry in std::fs::read_dir(path).map_err(|e| read_err(path, e))? {
            let p = entry.map_err(|e| read_err(path, e))?.path();
            let ext = p
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or_default()
                .to_ascii_lowercase();
            if p.is_file() && matches!(ext.as_str(), "yaml" | "yml" | "json") {
                files.push(p);
            }
        }
        files.sort();
    } else {
        files.push(path.to_path_buf());
    }
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).map_err(|e| read_err(&p, e))?;
            let name = p
                .file_name()
                .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into_owned());
            Ok((name, text))
        })
        .collect()
}

fn object_name(value: &serde_json::Value) -> String {
    let meta = value.get("metadata");
    let field = |k: &str| {
        meta.and_then(|m| m.get(k))
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    format!("{}/{}", field("namespace"), field("name"))
}

/// Sends the warm request and follows its events, drawing progress as they come.
async fn warm_items(args: &Args, items: Vec<WarmItem>) -> Result<Vec<Row>, CliError> {
    let urls: HashMap<String, String> = items
        .iter()
        .map(|i| {
            (
                i.id.clone(),
                i.request.as_ref().map(|r| r.url.clone()).unwrap_or_default(),
            )
        })
        .collect();
    let order: Vec<String> = items.iter().map(|i| i.id.clone()).collect();
    let mut client = args.socket.connect().await?;
    let mut events = client
        .warm(WarmRequest {
            items,
            concurrency: args.concurrency,
        })
        .await?
        .into_inner();
    let mut view = Progress::new(std::io::stderr().is_terminal());
    let mut started: HashMap<String, Instant> = HashMap::new();
    let mut finished: HashMap<String, Row> = HashMap::new();
    while let Some(event) = events.message().await? {
        let id = event.id;
        let url = urls.get(&id).cloned().unwrap_or_default();
        match event.event {
            Some(Event::Started(_)) => {
                started.insert(id.clone(), Instant::now());
                view.started(&id, &url);
            }
            Some(Event::Progress(p)) => view.progress(&id, p.bytes),
            Some(Event::Done(info)) => {
                let elapsed = started.get(&id).map(Instant::elapsed);
                let outcome = outcome_name(info.outcome).to_string();
                view.done(&id, &format!("{outcome} sha256:{}", short(&info.sha256)));
                finished.insert(
                    id.clone(),
                    Row {
                        plugin: id,
                        url,
                        digest: info.sha256,
                        outcome,
                        elapsed,
                        failed: false,
                    },
                );
            }
            Some(Event::Failed(f)) => {
                let elapsed = started.get(&id).map(Instant::elapsed);
                let code = tonic::Code::from_i32(f.code);
                view.failed(&id, &format!("{code:?}: {}", f.message));
                let mut row = Row::failed(id.clone(), url, format!("{code:?}: {}", f.message));
                row.elapsed = elapsed;
                finished.insert(id, row);
            }
            None => {}
        }
    }
    view.finish();
    // Every item ends with an event; one that did not means the stream was cut.
    Ok(order
        .into_iter()
        .map(|id| {
            finished.remove(&id).unwrap_or_else(|| {
                let url = urls.get(&id).cloned().unwrap_or_default();
                Row::failed(
                    id,
                    url,
                    "the daemon ended the warm-up before this module finished".into(),
                )
            })
        })
        .collect())
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}

/// Progress display: one bar per module on a terminal, plain lines on stderr otherwise.
enum Progress {
    Bars {
        multi: MultiProgress,
        bars: HashMap<String, ProgressBar>,
    },
    Lines,
}

impl Progress {
    fn new(terminal: bool) -> Self {
        if terminal {
            Progress::Bars {
                multi: MultiProgress::new(),
                bars: HashMap::new(),
            }
        } else {
            Progress::Lines
        }
    }

    fn started(&mut self, id: &str, url: &str) {
        match self {
            Progress::Bars { multi, bars } => {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {prefix} {bytes} {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_prefix(id.to_string());
                bar.set_message(url.to_string());
                bar.enable_steady_tick(Duration::from_millis(120));
                bars.insert(id.to_string(), bar);
            }
            Progress::Lines => eprintln!("{id}: warming {url}"),
        }
    }

    fn progress(&mut self, id: &str, bytes: u64) {
        match self {
            Progress::Bars { bars, .. } => {
                if let Some(bar) = bars.get(id) {
                    bar.set_position(bytes);
                }
            }
            Progress::Lines => eprintln!("{id}: {bytes} bytes"),
        }
    }

    fn done(&mut self, id: &str, text: &str) {
        match self {
            Progress::Bars { bars, .. } => {
                if let Some(bar) = bars.get(id) {
                    bar.finish_with_message(text.to_string());
                }
            }
            Progress::Lines => eprintln!("{id}: {text}"),
        }
    }

    fn failed(&mut self, id: &str, text: &str) {
        self.done(id, &format!("failed: {text}"));
    }

    fn finish(&mut self) {
        if let Progress::Bars { multi, .. } = self {
            let _ = multi.clear();
        }
    }
}

fn print_summary(rows: &[Row]) {
    let time = |r: &Row| {
        r.elapsed
            .map(|d| format!("{:.2}s", d.as_secs_f64()))
            .unwrap_or_else(|| "-".into())
    };
    let widths = rows.iter().fold([6usize, 3, 6], |w, r| {
        [
            w[0].max(r.plugin.len()),
            w[1].max(r.url.len()),
            w[2].max(r.digest.len().min(64)),
        ]
    });
    println!(
        "{:<w0$}  {:<w1$}  {:<w2$}  {:<9}  OUTCOME",
        "PLUGIN",
        "URL",
        "SHA256",
        "TIME",
        w0 = widths[0],
        w1 = widths[1],
        w2 = widths[2]
    );
    for r in rows {
        println!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {:<9}  {}",
            r.plugin,
            r.url,
            if r.digest.is_empty() { "-" } else { &r.digest },
            time(r),
            r.outcome,
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
    }
}
