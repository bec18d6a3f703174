//! The S3 side of the throughput benches (`--s3 true`): one S3-protocol server on loopback —
//! moto's, the one the tests start (`backup/tests/common/s3_server.rs`, shared by path) — with
//! a Shadowcopy repository and a restic repository in the same bucket, so both tools pay the
//! same server and the same HTTP round trips. Figures against moto measure a Python server in
//! memory as much as either client: they compare the two clients, they are not S3's speed.

#[path = "../../backup/tests/common/s3_server.rs"]
mod s3_server;

use std::sync::Arc;

use anyhow::Context;
use backup::repo::{InitOptions, Password, RepoLocation, Repository, S3Settings};
use s3_server::S3Server;

/// A running S3 server and how to reach it.
#[derive(Debug)]
pub struct S3Target {
    server: S3Server,
}

impl S3Target {
    /// Starts moto's server with a bucket. Fails when `moto_server` is not installed: a bench
    /// asked for S3 figures must not print figures without them.
    pub fn start() -> anyhow::Result<S3Target> {
        let server = S3Server::start("shadowcopy-bench")
            .context("moto_server is not installed (pip install 'moto[server]')")?;
        Ok(S3Target { server })
    }

    fn settings(&self) -> S3Settings {
        S3Settings {
            endpoint: Some(self.server.endpoint.clone()),
            region: Some(s3_server::REGION.to_string()),
            access_key_id: Some(s3_server::ACCESS_KEY_ID.to_string()),
            secret_access_key: Some(s3_server::SECRET_ACCESS_KEY.to_string()),
            allow_http: Some(true),
        }
    }

    /// A fresh encrypted Shadowcopy repository under `prefix` (what `backup init` makes).
    pub fn repository(&self, prefix: &str) -> anyhow::Result<Arc<Repository>> {
        let location = RepoLocation::parse(&self.server.url(prefix))?;
        let opts = InitOptions { password: Some(Password::new("bench")), ..Default::default() };
        Ok(Arc::new(Repository::init_location(&location, &self.settings(), opts)?))
    }

    /// restic's name for a repository under `prefix` of the same bucket.
    pub fn restic_repo(&self, prefix: &str) -> String {
        format!("s3:{}/{}/{prefix}", self.server.endpoint, self.server.bucket)
    }

    /// The `AWS_*` variables restic reads its credentials from.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        self.server.env()
    }
}
