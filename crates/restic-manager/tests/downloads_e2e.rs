//! Downloading from a snapshot through the agent (DESIGN §10,
//! docs/downloads.md), with the real server, the real agent and the real
//! restic: a file byte for byte (and its safe file name), a folder as a
//! tar and as a zip (unpacked by the system's `tar` and `unzip` and
//! compared file by file), a missing path, bad input, no session, a
//! viewer, the audit entry; then a 200 MB file with the server's and the agent's
//! resident memory sampled while it streams, the per-host limit, a paused
//! reader holding restic back, and a download dropped half-way stopping
//! restic on the agent; and (with PostgreSQL) a download asked of one
//! server from an agent connected to another.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rm_testkit::e2e::{succeeded, Host};
use rm_testkit::fixtures::{assert_same_tree, make_tree};
use rm_testkit::{children_running, wait_until, MemorySampler, ServerProcess};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_restic-manager");

/// How long a job (and the listing of its snapshot) may take.
const JOB: Duration = rm_testkit::e2e::JOB_LIMIT;

/// Largest growth of the server's or the agent's resident memory allowed
/// while a 200 MB file streams through them.
const MAX_GROWTH_KIB: u64 = 50 * 1024;

fn download_url(
    base: &str,
    host: &str,
    snapshot: &str,
    path: &str,
    format: Option<&str>,
) -> String {
    let format = format.map(|f| format!("&format={f}")).unwrap_or_default();
    format!(
        "{base}/api/v1/hosts/{host}/snapshots/{snapshot}/download?path={}{format}",
        rm_testkit::http::query_value(path)
    )
}

async fn get(token: Option<&str>, url: &str) -> reqwest::Response {
    let mut request = rm_testkit::http::client().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

async fn json_error(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (status, body)
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

/// Unpacks `archive` with `program args… archive` into a new folder.
fn unpack(program: &str, args: &[&str], archive: &Path, into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    let status = std::process::Command::new(program)
        .args(args)
        .arg(archive)
        .current_dir(into)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "{program} could not unpack {}",
        archive.display()
    );
}

#[tokio::test]
async fn files_and_folders_download_as_they_were_and_bad_requests_get_json_errors() {
    let host = Host::start(
        Path::new(BIN),
        "downloads",
        &rm_testkit::restic::binary(),
        &[],
    )
    .await;
    succeeded(&host.set_local_repository("downloads-password").await);
    let src = host.scratch().join("src");
    make_tree(&src);
    let snapshot = host.admin.back_up(&host.id, &src, 0, JOB).await.unwrap();
    let base = host.server.url.clone();
    let token = host.admin.token().map(str::to_owned);
    let url =
        |path: &str, format: Option<&str>| download_url(&base, &host.id, &snapshot, path, format);
    let at = |name: &str| format!("{}/{name}", src.display());

    // A file, byte for byte, with its size and a safe name.
    let response = get(token.as_deref(), &url(&at("café-ü.txt"), None)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "content-type"),
        "application/octet-stream"
    );
    assert_eq!(
        header(&response, "content-disposition"),
        "attachment; filename=\"caf_-_.txt\"; filename*=UTF-8''caf%C3%A9-%C3%BC.txt"
    );
    let expected = std::fs::read(src.join("café-ü.txt")).unwrap();
    assert_eq!(
        header(&response, "content-length"),
        expected.len().to_string()
    );
    assert_eq!(
        response.bytes().await.unwrap().as_ref(),
        expected.as_slice()
    );
    let response = get(token.as_deref(), &url(&at("big.bin"), None)).await;
    assert_eq!(response.status(), 200);
    let got = response.bytes().await.unwrap();
    assert!(
        got.as_ref() == std::fs::read(src.join("big.bin")).unwrap().as_slice(),
        "big.bin differs"
    );

    // A folder as a tar and as a zip: every member as it was.
    let unpacked = host.scratch().join("unpacked");
    let inside = |root: &Path| root.join(src.join("nested").strip_prefix("/").unwrap());
    for (format, name, program, args) in [
        (None, "nested.tar", "tar", &["-xf"][..]),
        (Some("zip"), "nested.zip", "unzip", &["-q"][..]),
    ] {
        let response = get(token.as_deref(), &url(&at("nested"), format)).await;
        assert_eq!(response.status(), 200, "{format:?}");
        assert!(
            header(&response, "content-disposition").contains(&format!("filename=\"{name}\"")),
            "{}",
            header(&response, "content-disposition")
        );
        let archive = host.scratch().join(name);
        std::fs::write(&archive, response.bytes().await.unwrap()).unwrap();
        let into = unpacked.join(name);
        unpack(program, args, &archive, &into);
        assert_same_tree(&src.join("nested"), &inside(&into));
    }
    // A folder asked for with a trailing `/` is the same folder.
    let response = get(token.as_deref(), &url(&format!("{}/", at("nested")), None)).await;
    assert_eq!(response.status(), 200);
    assert!(header(&response, "content-disposition").contains("filename=\"nested.tar\""));
    drop(response);
    // The whole snapshot is named after it.
    let response = get(token.as_deref(), &url("/", None)).await;
    assert_eq!(response.status(), 200);
    assert!(header(&response, "content-disposition")
        .contains(&format!("filename=\"snapshot-{}.tar\"", &snapshot[..8])));
    drop(response);

    // A path the snapshot does not have: a JSON error naming it.
    let (status, body) =
        json_error(get(token.as_deref(), &url(&at("no-such-file"), None)).await).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "not_found");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no-such-file"),
        "{body}"
    );
    // Bad input never reaches the agent.
    for (bad, field) in [
        (url("relative/path", None), "path"),
        (url("/a/../b", None), "path"),
        (url("/", Some("rar")), "format"),
        (
            format!(
                "{base}/api/v1/hosts/{}/snapshots/not-hex/download?path=/",
                host.id
            ),
            "snapshot_id",
        ),
        (
            format!(
                "{base}/api/v1/hosts/{}/snapshots/{snapshot}/download",
                host.id
            ),
            "path",
        ),
    ] {
        let (status, body) = json_error(get(token.as_deref(), &bad).await).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&format!("`{field}`")),
            "{body}"
        );
    }
    // No session: 401, in the API's shape.
    let (status, body) = json_error(get(None, &url(&at("café-ü.txt"), None)).await).await;
    assert_eq!(status, 401, "{body}");
    assert!(body["error"]["code"].is_string(), "{body}");

    // HEAD would run restic for nothing.
    let head = rm_testkit::http::client()
        .head(url(&at("café-ü.txt"), None))
        .bearer_auth(token.as_deref().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 405);

    // A viewer may browse the tree but not take file contents.
    host.admin
        .create_user("watcher", "watcher-password-1", "viewer", None)
        .await
        .unwrap();
    let viewer = host
        .server
        .anonymous()
        .login("watcher", "watcher-password-1")
        .await
        .unwrap();
    let (status, body) = json_error(get(viewer.token(), &url(&at("café-ü.txt"), None)).await).await;
    assert_eq!(status, 403, "{body}");

    // Each download is in the audit log with what was taken.
    let (_, audit) = host
        .admin
        .get("/api/v1/audit?action=snapshot.download&limit=50")
        .await
        .unwrap();
    let entries = audit["entries"].as_array().unwrap();
    assert!(
        entries.iter().any(|e| e["target_id"] == host.id.as_str()
            && e["details"]["path"] == at("nested")
            && e["details"]["format"] == "zip"
            && e["details"]["snapshot_id"] == snapshot.as_str()),
        "{audit}"
    );
    assert_eq!(
        entries.len(),
        6,
        "one entry per download that started: {audit}"
    );
}

/// Writes `len` bytes of the kernel's random numbers to `path`: nothing for
/// restic to compress or deduplicate.
fn random_file(path: &Path, len: u64) {
    let mut source = std::fs::File::open("/dev/urandom").unwrap().take(len);
    let mut file = std::fs::File::create(path).unwrap();
    std::io::copy(&mut source, &mut file).unwrap();
}

/// The largest size the kernel auto-tunes a TCP socket buffer to
/// (`net.ipv4.tcp_rmem` or `tcp_wmem`, third value).
fn socket_buffer_max(name: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/sys/net/ipv4/{name}"))
        .unwrap()
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap()
}

/// The agent's `restic dump` processes.
fn dumps(agent: u32) -> Vec<(u32, String)> {
    children_running(agent, "dump")
}

#[tokio::test]
async fn a_200_mb_file_streams_in_bounded_memory_and_a_dropped_download_stops_restic() {
    const SIZE: u64 = 200 * 1024 * 1024;
    let server = ServerProcess::start(Path::new(BIN), &[]).await.unwrap();
    let agent = server
        .enrolled_agent(
            Path::new(BIN),
            "big-download",
            &rm_testkit::restic::binary(),
            &[],
        )
        .await
        .unwrap();
    let admin = server.admin().await.unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let src: PathBuf = scratch.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let huge = src.join("huge.bin");
    random_file(&huge, SIZE);
    let repo = scratch.path().join("repo").display().to_string();
    admin
        .set_repository_and_init(&agent.host_id, &repo, "big", JOB)
        .await
        .unwrap();
    let snapshot = admin.back_up(&agent.host_id, &src, 0, JOB).await.unwrap();
    let token = admin.token().map(str::to_owned);
    let url = download_url(
        &server.url,
        &agent.host_id,
        &snapshot,
        &huge.display().to_string(),
        None,
    );
    let server_pid = server.pid().unwrap();
    let agent_pid = agent.process.pid().unwrap();

    // The whole file, compared byte for byte as it arrives, while both
    // processes' memory is sampled.
    let before = [
        rm_testkit::ProcessMemory::of(server_pid).unwrap().rss_kib,
        rm_testkit::ProcessMemory::of(agent_pid).unwrap().rss_kib,
    ];
    let sampler = MemorySampler::start(vec![server_pid, agent_pid], Duration::from_millis(20));
    let started = Instant::now();
    let mut response = get(token.as_deref(), &url).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "content-length"), SIZE.to_string());
    let mut original = std::fs::File::open(&huge).unwrap();
    let mut expected = Vec::new();
    let mut received: u64 = 0;
    while let Some(chunk) = response.chunk().await.unwrap() {
        expected.resize(chunk.len(), 0);
        original.read_exact(&mut expected).unwrap();
        assert!(
            chunk.as_ref() == expected.as_slice(),
            "differs within bytes {received}..{}",
            received + chunk.len() as u64
        );
        received += chunk.len() as u64;
    }
    let took = started.elapsed();
    let peaks = sampler.stop();
    assert_eq!(received, SIZE);
    assert_eq!(
        original.read(&mut [0u8; 1]).unwrap(),
        0,
        "the download is shorter than the file"
    );
    let growth = [
        peaks[0].saturating_sub(before[0]),
        peaks[1].saturating_sub(before[1]),
    ];
    println!(
        "200 MiB download in {:.1} s ({:.0} MiB/s): server RSS {} → peak {} KiB (+{} KiB), agent RSS {} → peak {} KiB (+{} KiB)",
        took.as_secs_f64(),
        SIZE as f64 / 1048576.0 / took.as_secs_f64(),
        before[0], peaks[0], growth[0], before[1], peaks[1], growth[1],
    );
    assert!(
        growth[0] < MAX_GROWTH_KIB,
        "the server grew by {} KiB",
        growth[0]
    );
    assert!(
        growth[1] < MAX_GROWTH_KIB,
        "the agent grew by {} KiB",
        growth[1]
    );
    // /metrics counts it.
    let page = rm_testkit::http::client()
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let sample = |name: &str| -> u64 {
        page.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics"))
    };
    assert_eq!(sample("rm_snapshot_downloads_total"), 1);
    assert_eq!(sample("rm_snapshot_download_bytes_total"), SIZE);
    wait_until(Duration::from_secs(10), "restic dump to exit", || async {
        dumps(agent_pid).is_empty()
    })
    .await
    .unwrap();

    // Two downloads per host at once; a third is told to wait.
    let first = get(token.as_deref(), &url).await;
    let second = get(token.as_deref(), &url).await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let (status, body) = json_error(get(token.as_deref(), &url).await).await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("downloads running"),
        "{body}"
    );
    drop((first, second));

    // A download dropped half-way stops restic on the agent.
    wait_until(
        Duration::from_secs(10),
        "the dropped downloads' restic to stop",
        || async { dumps(agent_pid).is_empty() },
    )
    .await
    .unwrap();
    let mut response = get(token.as_deref(), &url).await;
    assert_eq!(response.status(), 200);
    let mut read = 0;
    while read < 1024 * 1024 {
        read += response.chunk().await.unwrap().unwrap().len();
    }
    let running = dumps(agent_pid);
    assert_eq!(
        running.len(),
        1,
        "one restic dump while the download runs: {running:?}"
    );
    // A reader that stops holds restic back: while it pauses, neither the
    // server nor the agent fills up, and restic writes little beyond what
    // the pipes and sockets hold.
    let restic_pid = running[0].0;
    let before = [
        rm_testkit::ProcessMemory::of(server_pid).unwrap().rss_kib,
        rm_testkit::ProcessMemory::of(agent_pid).unwrap().rss_kib,
    ];
    let sampler = MemorySampler::start(vec![server_pid, agent_pid], Duration::from_millis(20));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let written = rm_testkit::process_written(restic_pid).unwrap();
    let peaks = sampler.stop();
    let growth = [
        peaks[0].saturating_sub(before[0]),
        peaks[1].saturating_sub(before[1]),
    ];
    println!(
        "reader paused 3 s after {read} bytes: restic had written {written} bytes; server +{} KiB, agent +{} KiB",
        growth[0], growth[1],
    );
    // What may sit in kernel buffers between restic and this reader: two
    // connections, each with a sending and a receiving socket, at the
    // kernel's largest auto-tuned sizes, plus pipes and chunks in flight.
    let held =
        2 * (socket_buffer_max("tcp_rmem") + socket_buffer_max("tcp_wmem")) + 8 * 1024 * 1024;
    assert!(
        held < SIZE,
        "this kernel's socket buffers hold the whole file"
    );
    assert!(
        written < held,
        "restic was not held back: it wrote {written} bytes (buffers hold at most {held})"
    );
    assert!(
        growth[0] < MAX_GROWTH_KIB && growth[1] < MAX_GROWTH_KIB,
        "{growth:?}"
    );
    let dropped = Instant::now();
    drop(response);
    wait_until(
        Duration::from_secs(10),
        "restic dump to be stopped",
        || async { dumps(agent_pid).is_empty() },
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}; still running: {:?}\nagent log:\n{}",
            dumps(agent_pid),
            agent.process.log()
        )
    });
    println!(
        "restic dump stopped {} ms after the download was dropped",
        dropped.elapsed().as_millis()
    );
    // The place is free again.
    let again = get(token.as_deref(), &url).await;
    assert_eq!(again.status(), 200);
}

/// Two servers on one PostgreSQL database: the browser's request on A, the
/// agent's WebSocket on B. A signals B to pass `download.start` on with
/// A's upload URL, and the agent posts the data to A directly.
#[tokio::test]
async fn a_download_asked_of_one_server_comes_from_an_agent_connected_to_another() {
    let test = "a_download_asked_of_one_server_comes_from_an_agent_connected_to_another";
    if rm_testkit::Backend::postgres_or_skip(test).is_none() {
        return;
    }
    let a = rm_testkit::TestServer::start_on(rm_testkit::Backend::Postgres)
        .await
        .unwrap();
    let b = a.start_beside(|_| {}).await.unwrap();
    let agent = b
        .enrolled_agent(
            Path::new(BIN),
            "cluster-download",
            &rm_testkit::restic::binary(),
            &[],
        )
        .await
        .unwrap();
    let admin = a.admin().await.unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let src = scratch.path().join("src");
    make_tree(&src);
    let repo = scratch.path().join("repo").display().to_string();
    admin
        .set_repository_and_init(&agent.host_id, &repo, "pw", JOB)
        .await
        .unwrap();
    let snapshot = admin.back_up(&agent.host_id, &src, 0, JOB).await.unwrap();
    assert!(
        !a.state.hub().is_connected(agent.host_id.parse().unwrap()),
        "the agent is on B"
    );
    let file = src.join("big.bin");
    let url = download_url(
        &a.url,
        &agent.host_id,
        &snapshot,
        &file.display().to_string(),
        None,
    );
    let response = get(admin.token(), &url).await;
    assert_eq!(response.status(), 200);
    assert!(
        response.bytes().await.unwrap().as_ref() == std::fs::read(&file).unwrap().as_slice(),
        "big.bin came back changed"
    );
    // A missing path is the agent's answer, through A as well.
    let missing = download_url(&a.url, &agent.host_id, &snapshot, "/no/such/file", None);
    let (status, body) = json_error(get(admin.token(), &missing).await).await;
    assert_eq!(status, 404, "{body}");
}
