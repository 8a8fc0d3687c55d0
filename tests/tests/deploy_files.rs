//! The files in `deploy/` and `dashboards/`, checked without a container engine: every YAML and
//! JSON file parses; the Dockerfile, the Kubernetes example, the compose example, the Grafana
//! dashboard and the alert rules hold what their users rely on; and every metric the dashboard
//! and the alert rules query is in the README's metric table and exported by a live proxy's
//! `/metrics`.
//!
//! No image is built and no container runs here: these tests are the whole validation.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use qproxy::config::ServeArgs;
use qproxy::net::upstream::UpstreamUrl;
use qproxy_tests::proxy::admin_get;
use qproxy_tests::{connect, PgCluster, Proxy, ProxyOptions, SUPERUSER};
use serde::Deserialize;
use serde_json::Value as Json;
use serde_norway::Value as Yaml;

/// The admin port in the image, the Kubernetes example and the compose example.
const ADMIN_PORT: u64 = 9930;
/// The finding kinds a `kind` label can hold.
const FINDING_KINDS: [&str; 5] = [
    "n_plus_one",
    "repeated_query",
    "unindexed_filter",
    "unindexed_sort",
    "unbounded_select",
];

// ---------------------------------------------------------------------------------------------
// Reading the files
// ---------------------------------------------------------------------------------------------

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Files under `dir` (recursively) whose names end with one of `suffixes`, sorted.
fn files_under(dir: &Path, suffixes: &[&str]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if suffixes.iter().any(|s| path.to_string_lossy().ends_with(s)) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// Every document of a (possibly multi-document) YAML file; empty documents are skipped.
fn yaml_documents(path: &Path) -> Vec<Yaml> {
    serde_norway::Deserializer::from_str(&read(path))
        .map(|doc| Yaml::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|doc| !doc.is_null())
        .collect()
}

fn yaml(path: &Path) -> Yaml {
    let mut docs = yaml_documents(path);
    assert_eq!(docs.len(), 1, "{}: one YAML document", path.display());
    docs.remove(0)
}

fn json(path: &Path) -> Json {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `value[key]` as a string, or a panic naming `what`.
fn str_at<'a>(value: &'a Yaml, key: &str, what: &str) -> &'a str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: `{key}` is not a string: {value:?}"))
}

fn seq<'a>(value: &'a Yaml, key: &str, what: &str) -> &'a [Yaml] {
    value[key]
        .as_sequence()
        .unwrap_or_else(|| panic!("{what}: `{key}` is not a list"))
}

// ---------------------------------------------------------------------------------------------
// Syntax
// ---------------------------------------------------------------------------------------------

#[test]
fn every_yaml_and_json_file_parses() {
    let mut yaml_files = 0;
    let mut json_files = 0;
    for dir in ["deploy", "dashboards"] {
        for path in files_under(&repo().join(dir), &[".yml", ".yaml"]) {
            assert!(
                !yaml_documents(&path).is_empty(),
                "{}: empty",
                path.display()
            );
            yaml_files += 1;
        }
        for path in files_under(&repo().join(dir), &[".json"]) {
            json(&path);
            json_files += 1;
        }
    }
    assert!(yaml_files >= 9, "only {yaml_files} YAML files found");
    assert!(json_files >= 1, "the dashboard JSON is missing");
}

// ---------------------------------------------------------------------------------------------
// Dockerfile
// ---------------------------------------------------------------------------------------------

/// The Dockerfile's instructions, continuation lines joined and comments dropped.
fn dockerfile_instructions() -> Vec<(String, String)> {
    let text = read(&repo().join("deploy/Dockerfile"));
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => current.push_str(part),
            None => {
                current.push_str(line);
                let (keyword, args) = current.split_once(' ').unwrap_or((&current, ""));
                instructions.push((keyword.to_uppercase(), args.trim().to_string()));
                current.clear();
            }
        }
    }
    instructions
}

#[test]
fn dockerfile_is_multi_stage_non_root_and_locked() {
    let instructions = dockerfile_instructions();
    let all = |keyword: &str| -> Vec<&str> {
        instructions
            .iter()
            .filter(|(k, _)| k == keyword)
            .map(|(_, args)| args.as_str())
            .collect()
    };
    let stages = all("FROM");
    assert!(stages.len() >= 2, "not multi-stage: {stages:?}");
    assert!(
        stages.iter().all(|s| s.to_uppercase().contains(" AS ")),
        "every stage is named: {stages:?}"
    );
    assert!(stages[0].starts_with("rust:"), "builder: {}", stages[0]);
    assert!(
        all("COPY").iter().any(|c| c.starts_with("--from=builder")),
        "the runtime stage copies from the builder"
    );
    assert!(
        all("RUN")
            .iter()
            .any(|r| r.contains("cargo build --locked --release -p qproxy")),
        "the build is --locked --release -p qproxy"
    );

    let user = *all("USER").last().expect("a USER instruction");
    let uid = user.split(':').next().unwrap();
    assert!(
        uid != "root" && uid != "0" && !uid.is_empty(),
        "runs as root: {user}"
    );
    // The last USER comes after the last FROM: it applies to the runtime image.
    let last = |keyword: &str| instructions.iter().rposition(|(k, _)| k == keyword);
    assert!(last("USER") > last("FROM"));

    let exposed: BTreeSet<&str> = all("EXPOSE")
        .iter()
        .flat_map(|e| e.split_whitespace())
        .collect();
    assert!(exposed.contains("6432") && exposed.contains(&*ADMIN_PORT.to_string()));
    assert_eq!(all("ENTRYPOINT"), [r#"["qproxy"]"#]);
    assert_eq!(all("CMD"), [r#"["serve"]"#]);
    let env = all("ENV").join(" ");
    for setting in [
        "QPROXY_LISTEN=0.0.0.0:6432",
        &format!("QPROXY_ADMIN_LISTEN=0.0.0.0:{ADMIN_PORT}"),
        "QPROXY_STORE=/var/lib/qproxy/",
    ] {
        assert!(env.contains(setting), "ENV lacks {setting}: {env}");
    }

    let ignore = read(&repo().join("deploy/Dockerfile.dockerignore"));
    assert!(ignore.lines().any(|l| l.trim() == "target"));
}

// ---------------------------------------------------------------------------------------------
// Kubernetes
// ---------------------------------------------------------------------------------------------

/// Every document under deploy/kubernetes, by kind.
fn kubernetes_objects() -> HashMap<String, Vec<Yaml>> {
    let mut by_kind: HashMap<String, Vec<Yaml>> = HashMap::new();
    for path in files_under(&repo().join("deploy/kubernetes"), &[".yml", ".yaml"]) {
        for doc in yaml_documents(&path) {
            let kind = str_at(&doc, "kind", &path.display().to_string()).to_string();
            by_kind.entry(kind).or_default().push(doc);
        }
    }
    by_kind
}

fn only<'a>(objects: &'a HashMap<String, Vec<Yaml>>, kind: &str) -> &'a Yaml {
    match objects.get(kind).map(Vec::as_slice) {
        Some([one]) => one,
        other => panic!("expected one {kind}, found {other:?}"),
    }
}

fn env_var<'a>(container: &'a Yaml, name: &str) -> &'a Yaml {
    seq(container, "env", "container")
        .iter()
        .find(|e| e["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no env var {name}"))
}

#[test]
fn kubernetes_example_runs_qproxy_as_a_native_sidecar() {
    let objects = kubernetes_objects();
    let kinds: BTreeSet<&str> = objects.keys().map(String::as_str).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "ConfigMap",
            "Deployment",
            "Kustomization",
            "Secret",
            "Service"
        ])
    );
    for resource in seq(
        only(&objects, "Kustomization"),
        "resources",
        "kustomization",
    ) {
        let file = repo()
            .join("deploy/kubernetes")
            .join(resource.as_str().unwrap());
        assert!(file.is_file(), "kustomization lists {}", file.display());
    }

    let deployment = only(&objects, "Deployment");
    let pod = &deployment["spec"]["template"];
    let spec = &pod["spec"];
    let sidecar = seq(spec, "initContainers", "pod")
        .iter()
        .find(|c| c["name"].as_str() == Some("qproxy"))
        .expect("qproxy is an init container");
    assert_eq!(
        str_at(sidecar, "restartPolicy", "sidecar"),
        "Always",
        "an init container without restartPolicy: Always blocks the pod's start"
    );

    // The admin port: declared, listened on by qproxy, probed, scraped.
    let admin = seq(sidecar, "ports", "sidecar")
        .iter()
        .find(|p| p["name"].as_str() == Some("admin"))
        .expect("a port named admin");
    assert_eq!(admin["containerPort"].as_u64(), Some(ADMIN_PORT));
    assert_eq!(
        env_var(sidecar, "QPROXY_ADMIN_LISTEN")["value"].as_str(),
        Some(&*format!("0.0.0.0:{ADMIN_PORT}"))
    );
    for (probe, path) in [
        ("startupProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("livenessProbe", "/healthz"),
    ] {
        let get = &sidecar[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        let port = &get["port"];
        assert!(
            port.as_str() == Some("admin") || port.as_u64() == Some(ADMIN_PORT),
            "{probe} port {port:?}"
        );
    }
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"].as_str(), Some("true"));
    assert_eq!(
        annotations["prometheus.io/port"].as_str(),
        Some(&*ADMIN_PORT.to_string())
    );
    assert_eq!(annotations["prometheus.io/path"].as_str(), Some("/metrics"));
    let service_port = &seq(&only(&objects, "Service")["spec"], "ports", "service")[0];
    assert_eq!(service_port["targetPort"].as_str(), Some("admin"));

    for limit in ["requests", "limits"] {
        assert!(
            sidecar["resources"][limit]["memory"].is_string(),
            "sidecar {limit}"
        );
    }

    // The upstream comes from the Secret; the app talks to the sidecar on loopback.
    let secret = only(&objects, "Secret");
    let from_secret = |container: &Yaml, var: &str| {
        let key_ref = &env_var(container, var)["valueFrom"]["secretKeyRef"];
        assert_eq!(key_ref["name"], secret["metadata"]["name"], "{var}");
        let key = str_at(key_ref, "key", var);
        secret["stringData"][key]
            .as_str()
            .unwrap_or_else(|| panic!("{var}: the Secret has no key {key}"))
            .to_string()
    };
    assert!(from_secret(sidecar, "QPROXY_UPSTREAM").starts_with("postgres://"));
    let app = &seq(spec, "containers", "pod")[0];
    let listen = env_var(sidecar, "QPROXY_LISTEN")["value"].as_str().unwrap();
    assert!(
        from_secret(app, "DATABASE_URL").contains(&format!("@{listen}/")),
        "the app's DATABASE_URL points at the sidecar's {listen}"
    );
    assert!(app["lifecycle"]["preStop"].is_mapping(), "app preStop");

    // The findings go to the fleet's PostgreSQL store, from the Secret: its own database, not
    // the app's (qproxy holds that connection open); each pod is its own instance; old runs
    // are deleted after a retention the proxy accepts.
    let store = UpstreamUrl::parse(&from_secret(sidecar, "QPROXY_STORE"))
        .expect("QPROXY_STORE is a postgres:// URL");
    let app_db = UpstreamUrl::parse(&from_secret(app, "DATABASE_URL")).unwrap();
    assert!(
        store.database.is_some() && store.database != app_db.database,
        "the store has a database of its own"
    );
    assert_eq!(
        env_var(sidecar, "QPROXY_INSTANCE")["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        Some("metadata.name")
    );
    let retention = env_var(sidecar, "QPROXY_STORE_RETENTION")["value"]
        .as_str()
        .unwrap();
    assert_retention_accepted(retention);

    // The ConfigMap is mounted where --config reads it; nothing keeps findings in the pod.
    let volumes = seq(spec, "volumes", "pod");
    let volume = |name: &str| {
        volumes
            .iter()
            .find(|v| v["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no volume {name}"))
    };
    let mount_of = |path_prefix: &str| {
        seq(sidecar, "volumeMounts", "sidecar")
            .iter()
            .find(|m| path_prefix.starts_with(m["mountPath"].as_str().unwrap()))
            .unwrap_or_else(|| panic!("nothing mounted at {path_prefix}"))["name"]
            .as_str()
            .unwrap()
    };
    assert!(
        !seq(sidecar, "volumeMounts", "sidecar")
            .iter()
            .any(|m| m["mountPath"].as_str() == Some("/var/lib/qproxy")),
        "no store volume: the store is in PostgreSQL"
    );
    let args: Vec<&str> = seq(sidecar, "args", "sidecar")
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let config_path = args[args.iter().position(|a| *a == "--config").unwrap() + 1];
    let config_map = only(&objects, "ConfigMap");
    assert_eq!(
        volume(mount_of(config_path))["configMap"]["name"],
        config_map["metadata"]["name"]
    );
    let file_name = Path::new(config_path)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    let config = str_at(&config_map["data"], file_name, "ConfigMap data");
    let config: toml::Table = toml::from_str(config).expect("the ConfigMap's TOML parses");
    let example: toml::Table = toml::from_str(&read(&repo().join("qproxy.example.toml"))).unwrap();
    assert_keys_known(&config, &example, "");

    // The drain fits in the pod's grace period, after the app's preStop and shutdown.
    let grace = config["shutdown_grace"]
        .as_integer()
        .expect("shutdown_grace");
    let pod_grace = spec["terminationGracePeriodSeconds"].as_i64().unwrap();
    assert!(pod_grace >= grace + 20, "{pod_grace}s for a {grace}s drain");
}

/// `qproxy serve` accepts `retention` as its `--store-retention`.
fn assert_retention_accepted(retention: &str) {
    let config = ServeArgs {
        upstream: Some("postgres://db/app".into()),
        store_retention: Some(retention.into()),
        ..ServeArgs::default()
    }
    .resolve_with_env(|_| None)
    .unwrap_or_else(|e| panic!("retention {retention:?}: {e}"));
    assert!(config.store_writer.retention.is_some());
}

/// Every key of `config` exists in `example` (the documented, test-loaded example config).
fn assert_keys_known(config: &toml::Table, example: &toml::Table, prefix: &str) {
    for (key, value) in config {
        let known = example
            .get(key)
            .unwrap_or_else(|| panic!("unknown config key {prefix}{key}"));
        if let (Some(table), Some(known)) = (value.as_table(), known.as_table()) {
            assert_keys_known(table, known, &format!("{prefix}{key}."));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Compose
// ---------------------------------------------------------------------------------------------

#[test]
fn compose_builds_the_image_and_mounts_files_that_exist() {
    let dir = repo().join("deploy/compose");
    let compose = yaml(&dir.join("docker-compose.yml"));
    let services = &compose["services"];
    for name in ["postgres", "qproxy", "prometheus", "grafana"] {
        assert!(services[name].is_mapping(), "no {name} service");
    }
    assert!(str_at(&services["postgres"], "image", "postgres").starts_with("postgres:15"));

    let build = &services["qproxy"]["build"];
    let context = dir.join(str_at(build, "context", "qproxy build"));
    let dockerfile = context.join(str_at(build, "dockerfile", "qproxy build"));
    assert_eq!(
        dockerfile.canonicalize().unwrap(),
        repo().join("deploy/Dockerfile").canonicalize().unwrap()
    );
    let environment = &services["qproxy"]["environment"];
    assert_eq!(
        environment["QPROXY_ADMIN_LISTEN"].as_str(),
        Some(&*format!("0.0.0.0:{ADMIN_PORT}"))
    );
    // Findings go to the compose PostgreSQL (a database the app does not use), not a volume.
    let store = UpstreamUrl::parse(environment["QPROXY_STORE"].as_str().expect("QPROXY_STORE"))
        .expect("QPROXY_STORE is a postgres:// URL");
    let upstream = UpstreamUrl::parse(environment["QPROXY_UPSTREAM"].as_str().unwrap()).unwrap();
    assert_eq!(store.host, "postgres", "the compose service");
    assert_ne!(store.database, upstream.database);
    assert!(environment["QPROXY_INSTANCE"].is_string());
    assert_retention_accepted(environment["QPROXY_STORE_RETENTION"].as_str().unwrap());

    // Every bind mount's source exists; remember where each lands.
    let mut mounted = HashMap::new();
    for (name, service) in services.as_mapping().unwrap() {
        let Some(volumes) = service["volumes"].as_sequence() else {
            continue;
        };
        for volume in volumes {
            let spec = volume.as_str().expect("short volume syntax");
            let mut parts = spec.split(':');
            let (source, target) = (parts.next().unwrap(), parts.next().unwrap());
            if source.starts_with('.') {
                let source = dir.join(source).canonicalize().unwrap_or_else(|e| {
                    panic!("{name:?} mounts {source}, which does not exist: {e}")
                });
                mounted.insert(source, target.to_string());
            }
        }
    }
    let target_of = |path: &str| {
        let path = repo().join(path).canonicalize().unwrap();
        mounted
            .get(&path)
            .unwrap_or_else(|| panic!("{} is not mounted", path.display()))
            .clone()
    };

    // Prometheus scrapes qproxy's admin port and loads the mounted alert rules.
    let prometheus = yaml(&dir.join("prometheus.yml"));
    let rules = target_of("dashboards/alerts.yml");
    assert!(
        seq(&prometheus, "rule_files", "prometheus.yml")
            .iter()
            .any(|f| f.as_str() == Some(&*rules)),
        "rule_files lacks {rules}"
    );
    let targets =
        &seq(&prometheus, "scrape_configs", "prometheus.yml")[0]["static_configs"][0]["targets"];
    assert_eq!(targets[0].as_str(), Some(&*format!("qproxy:{ADMIN_PORT}")));
    target_of("deploy/compose/prometheus.yml");
    target_of("qproxy.example.toml");

    // Grafana: the provisioning directories, and the dashboard where the provider looks.
    let provisioning = "/etc/grafana/provisioning/";
    assert_eq!(
        target_of("dashboards/provisioning/datasources"),
        format!("{provisioning}datasources")
    );
    assert_eq!(
        target_of("dashboards/provisioning/dashboards"),
        format!("{provisioning}dashboards")
    );
    let provider = yaml(&repo().join("dashboards/provisioning/dashboards/qproxy.yml"));
    let provider = &seq(&provider, "providers", "dashboard provider")[0];
    let dashboard = target_of("dashboards/qproxy.json");
    assert_eq!(
        Path::new(&dashboard).parent().unwrap(),
        Path::new(str_at(&provider["options"], "path", "provider options"))
    );
    let datasources = yaml(&repo().join("dashboards/provisioning/datasources/prometheus.yml"));
    let datasource = &seq(&datasources, "datasources", "datasource provisioning")[0];
    assert_eq!(datasource["type"].as_str(), Some("prometheus"));
}

// ---------------------------------------------------------------------------------------------
// Dashboard and alert rules
// ---------------------------------------------------------------------------------------------

fn dashboard() -> Json {
    json(&repo().join("dashboards/qproxy.json"))
}

fn alert_rules() -> Yaml {
    yaml(&repo().join("dashboards/alerts.yml"))
}

/// Every `datasource` reference in the dashboard, wherever it is nested.
fn datasource_refs<'a>(value: &'a Json, found: &mut Vec<&'a Json>) {
    match value {
        Json::Object(map) => {
            for (key, value) in map {
                if key == "datasource" {
                    found.push(value);
                }
                datasource_refs(value, found);
            }
        }
        Json::Array(items) => items.iter().for_each(|v| datasource_refs(v, found)),
        _ => {}
    }
}

#[test]
fn dashboard_is_provisioning_ready() {
    let dashboard = dashboard();
    assert!(
        dashboard.get("id").is_none(),
        "provisioned dashboards carry no id"
    );
    assert!(dashboard["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 36);

    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no ${name} variable"))
    };
    let datasource = variable("datasource");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    for name in ["job", "instance"] {
        assert_eq!(variable(name)["type"], "query");
    }

    // Every reference goes through the variable, except Grafana's built-in annotations.
    let mut refs = Vec::new();
    datasource_refs(&dashboard, &mut refs);
    for r in refs {
        if r["type"] == "grafana" || r["type"] == "datasource" {
            continue;
        }
        let uid = r.get("uid").or(Some(r)).and_then(Json::as_str);
        assert_eq!(uid, Some("${datasource}"), "hard-coded datasource {r}");
    }

    let panels: Vec<&Json> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] != "row")
        .collect();
    assert!(panels.len() >= 12, "{} panels", panels.len());
    let mut ids = BTreeSet::new();
    for panel in panels {
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "duplicate panel id"
        );
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{} has no queries", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            assert!(
                expr.contains(r#"job=~"$job""#) && expr.contains(r#"instance=~"$instance""#),
                "{}: not filtered by $job/$instance: {expr}",
                panel["title"]
            );
        }
    }
}

#[test]
fn alert_rules_are_complete() {
    let rules = alert_rules();
    let mut names = BTreeSet::new();
    for group in seq(&rules, "groups", "alerts.yml") {
        let group_name = str_at(group, "name", "group");
        for rule in seq(group, "rules", group_name) {
            let name = str_at(rule, "alert", group_name);
            assert!(names.insert(name.to_string()), "duplicate alert {name}");
            assert!(str_at(rule, "expr", name).contains("qproxy_"), "{name}");
            assert!(str_at(rule, "for", name).ends_with('m'), "{name}: for");
            assert!(
                ["info", "warning", "critical"]
                    .contains(&rule["labels"]["severity"].as_str().unwrap()),
                "{name}: severity"
            );
            for annotation in ["summary", "description"] {
                assert!(
                    rule["annotations"][annotation].is_string(),
                    "{name}: {annotation}"
                );
            }
        }
    }
    let exprs = serde_norway::to_string(&rules).unwrap();
    for needle in [
        r#"increase(qproxy_findings_total{kind="n_plus_one"}[15m])"#,
        r#"qproxy_findings_total{kind="unbounded_select"}"#,
        "qproxy_events_dropped_total",
        "qproxy_upstream_errors_total",
        "qproxy_upstream_up",
    ] {
        assert!(exprs.contains(needle), "no alert on {needle}");
    }
}

/// The `kind="..."` label values in `text`.
fn kind_values(text: &str) -> Vec<String> {
    text.split(r#"kind=\""#)
        .skip(1)
        .chain(text.split(r#"kind=""#).skip(1))
        .map(|rest| rest.split(['"', '\\']).next().unwrap().to_string())
        .collect()
}

#[test]
fn finding_kinds_in_queries_are_real() {
    for file in ["dashboards/qproxy.json", "dashboards/alerts.yml"] {
        let values = kind_values(&read(&repo().join(file)));
        assert!(!values.is_empty(), "{file}");
        for value in values {
            assert!(FINDING_KINDS.contains(&&*value), "{file}: kind {value:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Every metric used is exported
// ---------------------------------------------------------------------------------------------

/// The `qproxy_*` metric names in `text` (an identifier starting with `qproxy_`).
fn metric_names(text: &str) -> BTreeSet<String> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices("qproxy_") {
        if text[..at].chars().next_back().is_some_and(is_ident) {
            continue;
        }
        let end = text[at..]
            .find(|c| !is_ident(c))
            .map_or(text.len(), |n| at + n);
        names.insert(text[at..end].to_string());
    }
    names
}

fn metrics_used() -> BTreeSet<String> {
    ["dashboards/qproxy.json", "dashboards/alerts.yml"]
        .iter()
        .flat_map(|file| metric_names(&read(&repo().join(file))))
        .collect()
}

/// `# TYPE` families of a Prometheus text exposition: name → type.
fn families(exposition: &str) -> HashMap<String, String> {
    exposition
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .map(|(name, kind)| (name.to_string(), kind.trim().to_string()))
        .collect()
}

/// Whether the series name `used` belongs to an exported family: the family itself, or a
/// histogram's `_bucket`/`_sum`/`_count`.
fn is_exported(used: &str, families: &HashMap<String, String>) -> bool {
    families.contains_key(used)
        || histogram_base(used)
            .and_then(|base| families.get(base))
            .is_some_and(|kind| kind == "histogram")
}

/// The family name of a histogram series name (`x_bucket`, `x_sum`, `x_count` → `x`).
fn histogram_base(name: &str) -> Option<&str> {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
}

#[test]
fn metric_names_are_extracted_whole() {
    let names = metric_names(
        r#"rate(qproxy_queries_total{job=~"$job"}[5m]) my_qproxy_x "qproxy_upstream_up""#,
    );
    assert_eq!(
        names,
        BTreeSet::from(["qproxy_queries_total".into(), "qproxy_upstream_up".into()])
    );
    let families =
        families("# HELP qproxy_rows_returned x\n# TYPE qproxy_rows_returned histogram\n");
    assert!(is_exported("qproxy_rows_returned_bucket", &families));
    assert!(!is_exported("qproxy_rows_returned_total", &families));
}

/// The quick check, without a proxy: every name used is in the list qproxy registers (a
/// histogram's series by its family name) and in the README's metric table.
#[test]
fn every_metric_used_is_in_the_registered_list() {
    // The list has no types: a `_bucket`/`_sum`/`_count` passes on its base name here, and
    // the live test below checks that the base is a histogram.
    let registered = qproxy::metrics::METRIC_NAMES;
    let unknown: Vec<String> = metrics_used()
        .into_iter()
        .filter(|used| {
            !registered.contains(&used.as_str())
                && !histogram_base(used).is_some_and(|base| registered.contains(&base))
        })
        .collect();
    assert!(unknown.is_empty(), "not in METRIC_NAMES: {unknown:?}");

    // And the README's metric table documents each of them.
    let readme = read(&repo().join("README.md"));
    for used in metrics_used() {
        let family = histogram_base(&used)
            .filter(|base| registered.contains(base))
            .unwrap_or(&used);
        assert!(
            readme.contains(&format!("| `{family}` |")),
            "README's metric table lacks {family}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_alerts_use_is_exported() {
    let used = metrics_used();
    assert!(
        used.len() >= 15,
        "only {} metric names found: {used:?}",
        used.len()
    );

    let cluster = PgCluster::start().unwrap_or_else(|e| panic!("starting PostgreSQL: {e:#}"));
    let proxy = Proxy::start(&ProxyOptions::new(
        cluster.url(SUPERUSER, "postgres", "disable"),
    ))
    .unwrap_or_else(|e| panic!("starting qproxy: {e:#}"));
    let port = proxy.admin_port();

    // Traffic that creates the labelled series: queries, an error, and an N+1 in a request
    // with a route, followed by another request so the first one ends.
    let client = connect(&proxy.url(SUPERUSER, "postgres", "disable"))
        .await
        .unwrap_or_else(|e| panic!("connecting through qproxy: {e}{}", proxy.log()));
    client
        .batch_execute(
            "CREATE TABLE deploy_items (id int PRIMARY KEY, name text NOT NULL);
             INSERT INTO deploy_items SELECT g, 'item ' || g FROM generate_series(1, 20) g;",
        )
        .await
        .unwrap();
    let tag = "/*request_id='deploy-1',route='deploy.items'*/";
    client
        .query(
            &format!("SELECT id FROM deploy_items ORDER BY id LIMIT 10 {tag}"),
            &[],
        )
        .await
        .unwrap();
    for id in 1..=8 {
        client
            .query(
                &format!("SELECT name FROM deploy_items WHERE id = $1 {tag}"),
                &[&id],
            )
            .await
            .unwrap();
    }
    assert!(client
        .simple_query("SELECT * FROM no_such_table")
        .await
        .is_err());
    client
        .query(
            "SELECT 1 /*request_id='deploy-2',route='deploy.other'*/",
            &[],
        )
        .await
        .unwrap();

    // Findings reach the metrics when their request ends (a grace period after the
    // connection moved on): poll until everything used is there, or give up and say what is
    // missing.
    let deadline = Instant::now() + Duration::from_secs(45);
    let (families, missing) = loop {
        let families = match admin_get(port, "/metrics") {
            Ok((200, body)) => families(&body),
            _ => HashMap::new(),
        };
        let missing: Vec<&String> = used.iter().filter(|u| !is_exported(u, &families)).collect();
        if missing.is_empty() || Instant::now() > deadline {
            break (families, missing);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut exported: Vec<&String> = families.keys().collect();
    exported.sort();
    assert!(
        missing.is_empty(),
        "used by dashboards/ but not exported: {missing:?}\nexported: {exported:?}{}",
        proxy.log()
    );

    // The probe paths of the Kubernetes example answer.
    for path in ["/healthz", "/readyz"] {
        let (status, _) = admin_get(port, path).unwrap();
        assert_eq!(status, 200, "{path}");
    }
    drop(client);
}
