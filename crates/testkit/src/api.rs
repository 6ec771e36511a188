//! A small client for the `/api/v1` JSON API.

use anyhow::{bail, Context};
use reqwest::{Method, StatusCode};
use rm_protocol::api::{
    CreateEnrollmentToken, EnrollRequest, EnrollResponse, EnrollmentTokenCreated, HostView,
    LoginRequest, LoginResponse,
};
use serde_json::Value;

/// An API client, optionally carrying a bearer token.
#[derive(Clone)]
pub struct Api {
    client: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Api {
    /// A client for the server at `base` (`http://host:port`).
    pub fn new(base: &str, token: Option<String>) -> Api {
        Api::with_client(crate::http::client(), base, token)
    }

    /// A client for `base` over `client` (e.g. one trusting a test
    /// server's self-signed certificate).
    pub fn with_client(client: reqwest::Client, base: &str, token: Option<String>) -> Api {
        Api {
            client,
            base: base.trim_end_matches('/').to_owned(),
            token,
        }
    }

    /// The same client with another bearer token.
    pub fn with_token(&self, token: impl Into<String>) -> Api {
        Api {
            token: Some(token.into()),
            ..self.clone()
        }
    }

    /// The bearer token this client sends, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Logs in and returns a client carrying the session token.
    pub async fn login(&self, username: &str, password: &str) -> anyhow::Result<Api> {
        let (status, body) = self
            .send(
                Method::POST,
                "/api/v1/auth/login",
                Some(serde_json::to_value(LoginRequest {
                    username: username.to_owned(),
                    password: password.to_owned(),
                })?),
            )
            .await?;
        if status != StatusCode::OK {
            bail!("login failed with {status}: {body}");
        }
        let login: LoginResponse = serde_json::from_value(body)?;
        Ok(self.with_token(login.token))
    }

    /// Sends a request; returns the status and the JSON body (`Null` when
    /// empty, a string when not JSON).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut request = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.context("API request failed")?;
        let status = response.status();
        let text = response.text().await?;
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, body))
    }

    /// GET.
    pub async fn get(&self, path: &str) -> anyhow::Result<(StatusCode, Value)> {
        self.send(Method::GET, path, None).await
    }

    /// A web UI page (`path` like `/hosts/<id>`) as this client's session
    /// sees it: its token sent as the session cookie. Returns the status
    /// and the HTML.
    pub async fn page(&self, path: &str) -> anyhow::Result<(StatusCode, String)> {
        let mut request = self.client.get(format!("{}{}", self.base, path));
        if let Some(token) = &self.token {
            request = request.header(reqwest::header::COOKIE, format!("rm_session={token}"));
        }
        let response = request.send().await.context("page request failed")?;
        let status = response.status();
        Ok((status, response.text().await?))
    }

    /// POST with a JSON body.
    pub async fn post(&self, path: &str, body: Value) -> anyhow::Result<(StatusCode, Value)> {
        self.send(Method::POST, path, Some(body)).await
    }

    /// PUT with a JSON body.
    pub async fn put(&self, path: &str, body: Value) -> anyhow::Result<(StatusCode, Value)> {
        self.send(Method::PUT, path, Some(body)).await
    }

    /// PATCH with a JSON body.
    pub async fn patch(&self, path: &str, body: Value) -> anyhow::Result<(StatusCode, Value)> {
        self.send(Method::PATCH, path, Some(body)).await
    }

    /// DELETE.
    pub async fn delete(&self, path: &str) -> anyhow::Result<(StatusCode, Value)> {
        self.send(Method::DELETE, path, None).await
    }

    /// Creates a user with `role` (`admin`, `operator`, `viewer`) and an
    /// optional `scope` (`{"team": "a"}`); fails unless 201. Returns the id.
    pub async fn create_user(
        &self,
        username: &str,
        password: &str,
        role: &str,
        scope: Option<Value>,
    ) -> anyhow::Result<String> {
        let mut body =
            serde_json::json!({"username": username, "password": password, "role": role});
        if let Some(scope) = scope {
            body["scope"] = scope;
        }
        let (status, body) = self.post("/api/v1/users", body).await?;
        if status != StatusCode::CREATED {
            bail!("creating user {username} failed with {status}: {body}");
        }
        body["id"]
            .as_str()
            .map(str::to_owned)
            .context("the created user has no id")
    }

    /// Creates an API token of this client's user, with a narrower `role`
    /// when given; fails unless 201. Returns a client using it.
    pub async fn api_token(&self, name: &str, role: Option<&str>) -> anyhow::Result<Api> {
        let mut body = serde_json::json!({"name": name});
        if let Some(role) = role {
            body["role"] = role.into();
        }
        let (status, body) = self.post("/api/v1/api-tokens", body).await?;
        if status != StatusCode::CREATED {
            bail!("creating API token {name} failed with {status}: {body}");
        }
        let token = body["token"].as_str().context("no token in the answer")?;
        Ok(self.with_token(token))
    }

    /// Creates a policy from `body` (a `PolicyRequest`); fails unless the
    /// server says 201. Returns the policy as the API shows it.
    pub async fn create_policy(&self, body: Value) -> anyhow::Result<Value> {
        let (status, view) = self.post("/api/v1/policies", body).await?;
        if status != StatusCode::CREATED {
            bail!("creating a policy failed with {status}: {view}");
        }
        Ok(view)
    }

    /// Replaces policy `id` with `body`; fails unless 200. Returns the
    /// policy as the API shows it.
    pub async fn update_policy(&self, id: &str, body: Value) -> anyhow::Result<Value> {
        let (status, view) = self.put(&format!("/api/v1/policies/{id}"), body).await?;
        if status != StatusCode::OK {
            bail!("updating policy {id} failed with {status}: {view}");
        }
        Ok(view)
    }

    /// Creates a notification channel from `body` (a `ChannelRequest`);
    /// fails unless 201. Returns the channel as the API shows it.
    pub async fn create_channel(&self, body: Value) -> anyhow::Result<Value> {
        let (status, view) = self.post("/api/v1/notification-channels", body).await?;
        if status != StatusCode::CREATED {
            bail!("creating a notification channel failed with {status}: {view}");
        }
        Ok(view)
    }

    /// Replaces channel `id` with `body`; fails unless 200.
    pub async fn update_channel(&self, id: &str, body: Value) -> anyhow::Result<Value> {
        let path = format!("/api/v1/notification-channels/{id}");
        let (status, view) = self.put(&path, body).await?;
        if status != StatusCode::OK {
            bail!("updating notification channel {id} failed with {status}: {view}");
        }
        Ok(view)
    }

    /// Channel `id` as the API shows it; fails unless 200.
    pub async fn channel(&self, id: &str) -> anyhow::Result<Value> {
        let (status, view) = self
            .get(&format!("/api/v1/notification-channels/{id}"))
            .await?;
        if status != StatusCode::OK {
            bail!("reading notification channel {id} failed with {status}: {view}");
        }
        Ok(view)
    }

    /// Sends a test message through channel `id`; returns `{ok, status,
    /// response}`. Fails unless the API answers 200 (whatever the
    /// receiver said).
    pub async fn test_channel(&self, id: &str) -> anyhow::Result<Value> {
        let path = format!("/api/v1/notification-channels/{id}/test");
        let (status, view) = self.post(&path, Value::Null).await?;
        if status != StatusCode::OK {
            bail!("testing notification channel {id} failed with {status}: {view}");
        }
        Ok(view)
    }

    /// Waits (up to `limit`) until the host's agent has acknowledged a
    /// schedule set of at least version `at_least` and it is the wanted
    /// one (the host is in sync); returns that version.
    pub async fn wait_schedule_acked(
        &self,
        host_id: &str,
        at_least: u64,
        limit: std::time::Duration,
    ) -> anyhow::Result<u64> {
        crate::wait_until(
            limit,
            &format!("host {host_id} to acknowledge schedule version {at_least} or later"),
            || async {
                matches!(self.host(host_id).await, Ok(h)
                    if h.schedule_version >= at_least
                        && h.schedule_applied_version == Some(h.schedule_version))
            },
        )
        .await?;
        Ok(self.host(host_id).await?.schedule_version)
    }

    /// Up to `limit` of the host's jobs, newest first; fails unless 200.
    pub async fn host_jobs(&self, host_id: &str, limit: u32) -> anyhow::Result<Vec<Value>> {
        let (status, body) = self
            .get(&format!("/api/v1/jobs?host_id={host_id}&limit={limit}"))
            .await?;
        if status != StatusCode::OK {
            bail!("listing the jobs of host {host_id} failed with {status}: {body}");
        }
        body.as_array()
            .cloned()
            .context("the job list is not a JSON array")
    }

    /// Creates an enrolment token; fails unless the server says 201.
    pub async fn create_enrollment_token(
        &self,
        name: Option<&str>,
        ttl_seconds: Option<u64>,
    ) -> anyhow::Result<EnrollmentTokenCreated> {
        self.create_labelled_enrollment_token(CreateEnrollmentToken {
            name: name.map(str::to_owned),
            ttl_seconds,
            labels: Default::default(),
        })
        .await
    }

    /// Creates an enrolment token whose host gets `labels` (`[("env",
    /// "prod")]`); fails unless the server says 201.
    pub async fn create_token_with_labels(
        &self,
        labels: &[(&str, &str)],
    ) -> anyhow::Result<EnrollmentTokenCreated> {
        self.create_labelled_enrollment_token(CreateEnrollmentToken {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        })
        .await
    }

    /// Creates an enrolment token from `request`; fails unless 201.
    pub async fn create_labelled_enrollment_token(
        &self,
        request: CreateEnrollmentToken,
    ) -> anyhow::Result<EnrollmentTokenCreated> {
        let body = serde_json::to_value(request)?;
        let (status, body) = self.post("/api/v1/enrollment-tokens", body).await?;
        if status != StatusCode::CREATED {
            bail!("creating an enrolment token failed with {status}: {body}");
        }
        Ok(serde_json::from_value(body)?)
    }

    /// Enrols a host; fails unless the server says 201.
    pub async fn enroll(
        &self,
        token: &str,
        name: Option<&str>,
        hostname: &str,
    ) -> anyhow::Result<EnrollResponse> {
        let body = serde_json::to_value(EnrollRequest {
            token: token.to_owned(),
            name: name.map(str::to_owned),
            hostname: hostname.to_owned(),
            labels: Default::default(),
        })?;
        let (status, body) = self.post("/api/v1/agents/enroll", body).await?;
        if status != StatusCode::CREATED {
            bail!("enrolment failed with {status}: {body}");
        }
        Ok(serde_json::from_value(body)?)
    }

    /// One host; fails unless 200.
    pub async fn host(&self, id: &str) -> anyhow::Result<HostView> {
        let (status, body) = self.get(&format!("/api/v1/hosts/{id}")).await?;
        if status != StatusCode::OK {
            bail!("GET host {id} failed with {status}: {body}");
        }
        Ok(serde_json::from_value(body)?)
    }

    /// All hosts, following the pages' `X-Next-Cursor`; fails unless
    /// every page is 200.
    pub async fn hosts(&self) -> anyhow::Result<Vec<HostView>> {
        let mut hosts = Vec::new();
        let mut path = String::from("/api/v1/hosts");
        loop {
            let (status, next, body) = self.hosts_page(&path).await?;
            if status != StatusCode::OK {
                bail!("GET {path} failed with {status}: {body}");
            }
            hosts.extend(serde_json::from_value::<Vec<HostView>>(body)?);
            match next {
                Some(cursor) => path = format!("/api/v1/hosts?after={cursor}"),
                None => return Ok(hosts),
            }
        }
    }

    /// One `GET /api/v1/hosts…` (with `path`'s query): the status, the
    /// `X-Next-Cursor` header if any, and the JSON body.
    pub async fn hosts_page(
        &self,
        path: &str,
    ) -> anyhow::Result<(StatusCode, Option<String>, Value)> {
        let mut request = self.client.get(format!("{}{}", self.base, path));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.context("API request failed")?;
        let status = response.status();
        let next = response
            .headers()
            .get("x-next-cursor")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, next, body))
    }

    /// Sets a host's repository; fails unless the server says 204.
    pub async fn set_repository(
        &self,
        host_id: &str,
        url: &str,
        password: &str,
    ) -> anyhow::Result<()> {
        let (status, body) = self
            .send(
                Method::PUT,
                &format!("/api/v1/hosts/{host_id}/repository"),
                Some(serde_json::json!({"url": url, "password": password})),
            )
            .await?;
        if status != StatusCode::NO_CONTENT {
            bail!("setting the repository failed with {status}: {body}");
        }
        Ok(())
    }

    /// Starts a job on a host; fails unless 201. Returns the job's id.
    pub async fn start_job(
        &self,
        host_id: &str,
        kind: &str,
        params: Value,
    ) -> anyhow::Result<String> {
        let (status, body) = self
            .post(
                &format!("/api/v1/hosts/{host_id}/jobs"),
                serde_json::json!({"kind": kind, "params": params}),
            )
            .await?;
        if status != StatusCode::CREATED {
            bail!("starting a {kind} job failed with {status}: {body}");
        }
        body["id"]
            .as_str()
            .map(str::to_owned)
            .context("the created job has no id")
    }

    /// Job `id` as the API shows it; fails unless 200.
    pub async fn job(&self, id: &str) -> anyhow::Result<Value> {
        let (status, body) = self.get(&format!("/api/v1/jobs/{id}")).await?;
        if status != StatusCode::OK {
            bail!("reading job {id} failed with {status}: {body}");
        }
        Ok(body)
    }

    /// Every stored log line of job `id`, in `seq` order.
    pub async fn job_logs(&self, id: &str) -> anyhow::Result<Vec<Value>> {
        let (status, body) = self.get(&format!("/api/v1/jobs/{id}/logs")).await?;
        if status != StatusCode::OK {
            bail!("reading the logs of job {id} failed with {status}: {body}");
        }
        body.as_array()
            .cloned()
            .context("the logs are not a JSON array")
    }

    /// The number of job `id`'s stored log lines, once they are checked to
    /// be `1..=n`, each once, in order (nothing lost, nothing stored twice).
    pub async fn dense_log_count(&self, id: &str) -> anyhow::Result<usize> {
        let seqs: Vec<u64> = self
            .job_logs(id)
            .await?
            .iter()
            .map(|l| l["seq"].as_u64().context("a log line without `seq`"))
            .collect::<anyhow::Result<_>>()?;
        let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
        if seqs != expected {
            bail!(
                "job {id}'s log lines are not 1..={} once each, in order: {seqs:?}",
                seqs.len()
            );
        }
        Ok(seqs.len())
    }

    /// Waits (up to `limit`) until job `id` has status `status`.
    pub async fn wait_job_status(
        &self,
        id: &str,
        status: &str,
        limit: std::time::Duration,
    ) -> anyhow::Result<Value> {
        crate::wait_until(limit, &format!("job {id} to be {status}"), || async {
            matches!(self.job(id).await, Ok(job) if job["status"] == status)
        })
        .await?;
        self.job(id).await
    }

    /// Waits (up to `limit`) until job `id` has finished, and returns it.
    pub async fn finished_job(
        &self,
        id: &str,
        limit: std::time::Duration,
    ) -> anyhow::Result<Value> {
        let path = format!("/api/v1/jobs/{id}");
        crate::wait_until(limit, &format!("job {id} to finish"), || async {
            match self.get(&path).await {
                Ok((_, job)) => matches!(
                    job["status"].as_str(),
                    Some("succeeded" | "partial" | "failed" | "cancelled" | "skipped")
                ),
                Err(_) => false,
            }
        })
        .await?;
        Ok(self.get(&path).await?.1)
    }
    /// Sets a host's repository and waits (up to `limit`) for the `init`
    /// job that follows to succeed.
    pub async fn set_repository_and_init(
        &self,
        host_id: &str,
        url: &str,
        password: &str,
        limit: std::time::Duration,
    ) -> anyhow::Result<()> {
        self.set_repository(host_id, url, password).await?;
        let (_, jobs) = self
            .get(&format!("/api/v1/jobs?host_id={host_id}&limit=1"))
            .await?;
        let init = jobs[0]["id"].as_str().context("no init job")?.to_owned();
        let job = self.finished_job(&init, limit).await?;
        if job["status"] != "succeeded" {
            bail!("the init job did not succeed: {job}");
        }
        Ok(())
    }

    /// Backs `path` up on a host, waits (up to `limit` for each step) for
    /// the job to succeed and its snapshot to be listed (after `earlier`
    /// snapshots), and returns the snapshot's full id.
    pub async fn back_up(
        &self,
        host_id: &str,
        path: &std::path::Path,
        earlier: usize,
        limit: std::time::Duration,
    ) -> anyhow::Result<String> {
        let id = self
            .start_job(
                host_id,
                "backup",
                serde_json::json!({"paths": [path.display().to_string()]}),
            )
            .await?;
        let job = self.finished_job(&id, limit).await?;
        if job["status"] != "succeeded" {
            bail!("the backup did not succeed: {job}");
        }
        let listed = self.wait_snapshots(host_id, earlier + 1, limit).await?;
        // Newest first.
        listed[0]["id"]
            .as_str()
            .map(str::to_owned)
            .context("a snapshot without an id")
    }

    /// Waits (up to `limit`) until the host's snapshot list holds `count`
    /// snapshots, and returns it: a backup's job ends when restic exits,
    /// and with restic 0.14 (whose summary names only a short id) its
    /// snapshot is listed once the agent's refresh after the job has run.
    pub async fn wait_snapshots(
        &self,
        host_id: &str,
        count: usize,
        limit: std::time::Duration,
    ) -> anyhow::Result<Vec<Value>> {
        let path = format!("/api/v1/hosts/{host_id}/snapshots");
        let listed = || async {
            match self.get(&path).await {
                Ok((_, Value::Array(list))) => list,
                _ => Vec::new(),
            }
        };
        crate::wait_until(limit, &format!("{count} snapshots listed"), || async {
            listed().await.len() == count
        })
        .await?;
        Ok(listed().await)
    }
    /// How many repository reports (`repo.stats`) the server stored for the
    /// host: the agent sends one after each job that changed the repository,
    /// once its refresh has listed and measured it.
    pub async fn repo_stats_rows(&self, host_id: &str) -> anyhow::Result<usize> {
        let (_, stats) = self
            .get(&format!("/api/v1/hosts/{host_id}/repo-stats"))
            .await?;
        Ok(stats["history"].as_array().map_or(0, Vec::len))
    }
}
