//! A browser-like session without a browser, for tests of the web UI's
//! routes: the `rm_session` cookie from the login form and the CSRF token
//! the pages embed. (reqwest here has no cookie store, so the cookie is
//! carried by hand; redirects are not followed, so a test sees them.)

use anyhow::{anyhow, bail, Context};
use reqwest::header::{COOKIE, SET_COOKIE};
use reqwest::redirect::Policy;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::TestServer;

/// A logged-in web session.
pub struct WebSession {
    client: reqwest::Client,
    base: String,
    cookie: String,
}

impl WebSession {
    /// Logs in through `POST /login`; fails unless it answers 303 with a
    /// session cookie.
    pub async fn login(
        server: &TestServer,
        username: &str,
        password: &str,
    ) -> anyhow::Result<WebSession> {
        let client = crate::http::client_builder()
            .redirect(Policy::none())
            .build()?;
        let response = client
            .post(format!("{}/login", server.url))
            .form(&[("username", username), ("password", password)])
            .send()
            .await?;
        if response.status() != StatusCode::SEE_OTHER {
            bail!("login answered {}", response.status());
        }
        let set_cookie = response
            .headers()
            .get(SET_COOKIE)
            .ok_or_else(|| anyhow!("the login set no cookie"))?
            .to_str()?;
        let cookie = set_cookie.split(';').next().unwrap_or_default().to_owned();
        if !cookie.starts_with("rm_session=rms.") {
            bail!("not a session cookie: {cookie}");
        }
        Ok(WebSession {
            client,
            base: server.url.clone(),
            cookie,
        })
    }

    /// A request to `path` carrying the session cookie.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, format!("{}{}", self.base, path))
            .header(COOKIE, &self.cookie)
    }

    /// GETs a page; returns status and HTML.
    pub async fn page(&self, path: &str) -> anyhow::Result<(StatusCode, String)> {
        let response = self.request(Method::GET, path).send().await?;
        Ok((response.status(), response.text().await?))
    }

    /// The CSRF token the pages embed.
    pub async fn csrf(&self) -> anyhow::Result<String> {
        let (status, html) = self.page("/users").await?;
        if status != StatusCode::OK {
            bail!("/users answered {status}");
        }
        let after = html
            .split(r#"<meta name="csrf-token" content=""#)
            .nth(1)
            .context("the page has no csrf meta tag")?;
        Ok(after.split('"').next().unwrap_or_default().to_owned())
    }

    /// A JSON API call with the cookie and, if given, `X-CSRF-Token`.
    pub async fn api(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        csrf: Option<&str>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut request = self.request(method, path);
        if let Some(csrf) = csrf {
            request = request.header("x-csrf-token", csrf);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// POSTs a urlencoded form, as a plain HTML form does; returns the
    /// status, the `Location` of a redirect (empty if none) and the body.
    pub async fn form(
        &self,
        path: &str,
        fields: &[(&str, &str)],
    ) -> anyhow::Result<(StatusCode, String, String)> {
        let response = self.request(Method::POST, path).form(fields).send().await?;
        let status = response.status();
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        Ok((status, location, response.text().await?))
    }
}
