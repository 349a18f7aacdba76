//! Blob store on any S3-compatible service, with aws-sdk-s3.
//!
//! Staged uploads stream in with a multipart upload (bounded memory: one
//! part in flight), aborted on any failure so no orphaned parts stay
//! behind; zip entries are read by range; images are put whole under their
//! content-addressed key.

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream as SdkStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use picsift_core::backend::{BlobStore, ByteStream};
use picsift_core::{Error, Result};
use serde::Deserialize;
use std::ops::Range;
use std::time::Duration;

/// Where and how to reach the bucket. Credentials come from the usual AWS
/// chain (environment, shared config and credentials files, web identity,
/// instance metadata).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// Endpoint URL of an S3-compatible service; empty for AWS itself.
    pub endpoint: String,
    /// Region name (Garage's default is `garage`).
    pub region: String,
    /// Bucket holding staged uploads and images.
    pub bucket: String,
    /// Prefix of every key in the bucket (for sharing a bucket).
    pub prefix: String,
    /// Path-style addressing (`endpoint/bucket/key`), which most
    /// self-hosted services need.
    pub path_style: bool,
    /// Multipart part size in bytes (at least 5 MiB; memory per upload).
    pub part_size: usize,
    /// Answer downloads with a redirect to a presigned URL instead of
    /// streaming them through the gateway.
    pub presign_downloads: bool,
    /// Lifetime of presigned URLs, in seconds.
    pub presign_ttl_secs: u64,
    /// Static access key id; empty to use the AWS credential chain.
    pub access_key_id: String,
    /// Static secret access key, with `access_key_id`.
    pub secret_access_key: String,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            region: "us-east-1".into(),
            bucket: "picsift".into(),
            prefix: String::new(),
            path_style: true,
            part_size: 16 << 20,
            presign_downloads: false,
            presign_ttl_secs: 300,
            access_key_id: String::new(),
            secret_access_key: String::new(),
        }
    }
}

/// Objects in one S3 bucket.
#[derive(Clone, Debug)]
pub struct S3BlobStore {
    client: Client,
    config: S3Config,
}

fn s3_err(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Backend(format!(
        "S3 {what}: {}",
        aws_sdk_s3::error::DisplayErrorContext(&e)
    ))
}

impl S3BlobStore {
    /// A store for `config`, with credentials from the AWS chain.
    pub async fn connect(config: S3Config) -> Result<Self> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(config.region.clone()));
        if !config.endpoint.is_empty() {
            loader = loader.endpoint_url(&config.endpoint);
        }
        if !config.access_key_id.is_empty() {
            let creds = aws_sdk_s3::config::Credentials::new(
                &config.access_key_id,
                &config.secret_access_key,
                None,
                None,
                "picsift-config",
            );
            loader = loader.credentials_provider(creds);
        }
        let shared = loader.load().await;
        let s3 = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(config.path_style)
            .build();
        Ok(Self::with_client(Client::from_conf(s3), config))
    }

    /// A store over an existing client.
    pub fn with_client(client: Client, mut config: S3Config) -> Self {
        config.part_size = config.part_size.max(5 << 20);
        Self { client, config }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.config.prefix)
    }

    /// Sets the bucket's lifecycle rule that aborts multipart uploads left
    /// incomplete for `days` (a gateway that died mid-upload leaves its
    /// parts, billed and invisible, until then). This replaces the
    /// bucket's lifecycle configuration: a bucket of its own for picsift.
    pub async fn abort_incomplete_uploads_after(&self, days: i32) -> Result<()> {
        use aws_sdk_s3::types::{
            AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, ExpirationStatus,
            LifecycleRule, LifecycleRuleFilter,
        };
        let rule = LifecycleRule::builder()
            .id("picsift-abort-incomplete-uploads")
            .status(ExpirationStatus::Enabled)
            .filter(
                LifecycleRuleFilter::builder()
                    .prefix(&self.config.prefix)
                    .build(),
            )
            .abort_incomplete_multipart_upload(
                AbortIncompleteMultipartUpload::builder()
                    .days_after_initiation(days)
                    .build(),
            )
            .build()
            .map_err(|e| s3_err("lifecycle rule", e))?;
        let lifecycle = BucketLifecycleConfiguration::builder()
            .rules(rule)
            .build()
            .map_err(|e| s3_err("lifecycle rule", e))?;
        self.client
            .put_bucket_lifecycle_configuration()
            .bucket(&self.config.bucket)
            .lifecycle_configuration(lifecycle)
            .send()
            .await
            .map_err(|e| s3_err("put lifecycle configuration", e))?;
        Ok(())
    }

    /// The days after which the bucket aborts incomplete multipart
    /// uploads, when a lifecycle rule says so.
    pub async fn incomplete_uploads_aborted_after(&self) -> Result<Option<i32>> {
        let out = match self
            .client
            .get_bucket_lifecycle_configuration()
            .bucket(&self.config.bucket)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {
                return Ok(None);
            }
            Err(e) => return Err(s3_err("get lifecycle configuration", e)),
        };
        Ok(out
            .rules()
            .iter()
            .filter(|r| r.status() == &aws_sdk_s3::types::ExpirationStatus::Enabled)
            .find_map(|r| {
                r.abort_incomplete_multipart_upload()?
                    .days_after_initiation()
            }))
    }

    /// Sends `head` (one part) and the rest of `body` as the parts of
    /// `upload`, one part in memory at a time, and puts them together.
    async fn send_parts(
        &self,
        key: &str,
        upload: &str,
        head: BytesMut,
        body: &mut ByteStream,
    ) -> Result<u64> {
        let mut etags = Vec::new();
        let mut total = 0u64;
        let mut buf = head;
        loop {
            let mut ended = false;
            while buf.len() < self.config.part_size {
                match body.next().await {
                    Some(chunk) => buf.extend_from_slice(&chunk?),
                    None => {
                        ended = true;
                        break;
                    }
                }
            }
            if !buf.is_empty() || etags.is_empty() {
                let part = buf.split().freeze();
                let number = etags.len() as u32 + 1;
                let n = part.len() as u64;
                etags.push(self.put_part(key, upload, number, total, part).await?);
                total += n;
            }
            if ended {
                break;
            }
        }
        self.finish_parts(key, upload, &etags).await?;
        Ok(total)
    }

    /// Multipart uploads started and neither completed nor aborted (there
    /// should be none once uploads have finished).
    pub async fn open_multipart_uploads(&self) -> Result<usize> {
        let out = self
            .client
            .list_multipart_uploads()
            .bucket(&self.config.bucket)
            .prefix(&self.config.prefix)
            .send()
            .await
            .map_err(|e| s3_err("list multipart uploads", e))?;
        Ok(out.uploads().len())
    }
}

#[async_trait]
impl BlobStore for S3BlobStore {
    async fn put(&self, key: &str, bytes: Bytes) -> Result<()> {
        self.client
            .put_object()
            .bucket(&self.config.bucket)
            .key(self.key(key))
            .body(SdkStream::from(bytes))
            .send()
            .await
            .map_err(|e| s3_err("put", e))?;
        Ok(())
    }

    async fn put_stream(&self, key: &str, mut body: ByteStream) -> Result<u64> {
        // Small uploads need no multipart upload: read up to one part first.
        let mut head = BytesMut::new();
        while head.len() < self.config.part_size {
            match body.next().await {
                Some(chunk) => head.extend_from_slice(&chunk?),
                None => {
                    let n = head.len() as u64;
                    self.put(key, head.freeze()).await?;
                    return Ok(n);
                }
            }
        }
        let upload = self.start_parts(key).await?;
        match self.send_parts(key, &upload, head, &mut body).await {
            Ok(n) => Ok(n),
            Err(e) => {
                // Leave no orphaned parts behind.
                if let Err(a) = self.abort_parts(key, &upload).await {
                    tracing::warn!(key, error = %a, "aborting a multipart upload failed");
                }
                Err(e)
            }
        }
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        if range.end <= range.start {
            return Ok(Bytes::new());
        }
        let out = self
            .client
            .get_object()
            .bucket(&self.config.bucket)
            .key(self.key(key))
            .range(format!("bytes={}-{}", range.start, range.end - 1))
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                Some(se) if se.is_no_such_key() => Error::NotFound(key.into()),
                _ => s3_err("get range", e),
            })?;
        let data = out
            .body
            .collect()
            .await
            .map_err(|e| s3_err("read range", e))?;
        Ok(data.into_bytes())
    }

    async fn get_stream(&self, key: &str, range: Option<Range<u64>>) -> Result<ByteStream> {
        let mut req = self
            .client
            .get_object()
            .bucket(&self.config.bucket)
            .key(self.key(key));
        if let Some(r) = range.filter(|r| r.end > r.start) {
            req = req.range(format!("bytes={}-{}", r.start, r.end - 1));
        }
        let out = req.send().await.map_err(|e| match e.as_service_error() {
            Some(se) if se.is_no_such_key() => Error::NotFound(key.into()),
            _ => s3_err("get", e),
        })?;
        let stream = futures_util::stream::unfold(out.body, |mut body| async move {
            body.next()
                .await
                .map(|chunk| (chunk.map_err(std::io::Error::other), body))
        });
        Ok(stream.boxed())
    }

    async fn size(&self, key: &str) -> Result<Option<u64>> {
        match self
            .client
            .head_object()
            .bucket(&self.config.bucket)
            .key(self.key(key))
            .send()
            .await
        {
            Ok(out) => Ok(Some(out.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) if e.as_service_error().is_some_and(|se| se.is_not_found()) => Ok(None),
            Err(e) => Err(s3_err("head", e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.config.bucket)
            .key(self.key(key))
            .send()
            .await
            .map_err(|e| s3_err("delete", e))?;
        Ok(())
    }

    async fn presigned_get(&self, key: &str) -> Result<Option<String>> {
        if !self.config.presign_downloads {
            return Ok(None);
        }
        let presign = aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(
            self.config.presign_ttl_secs,
        ))
        .map_err(|e| s3_err("presigning config", e))?;
        let req = self
            .client
            .get_object()
            .bucket(&self.config.bucket)
            .key(self.key(key))
            .presigned(presign)
            .await
            .map_err(|e| s3_err("presign", e))?;
        Ok(Some(req.uri().to_string()))
    }

    async fn start_parts(&self, key: &str) -> Result<String> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.config.bucket)
            .key(self.key(key))
            .send()
            .await
            .map_err(|e| s3_err("create multipart upload", e))?;
        created
            .upload_id()
            .map(str::to_string)
            .ok_or_else(|| Error::Backend("S3 returned no upload id".into()))
    }

    async fn put_part(
        &self,
        key: &str,
        upload: &str,
        number: u32,
        _offset: u64,
        bytes: Bytes,
    ) -> Result<String> {
        let out = self
            .client
            .upload_part()
            .bucket(&self.config.bucket)
            .key(self.key(key))
            .upload_id(upload)
            .part_number(i32::try_from(number).unwrap_or(i32::MAX))
            .body(SdkStream::from(bytes))
            .send()
            .await
            .map_err(|e| match e.as_service_error() {
                Some(se) if se.meta().code() == Some("NoSuchUpload") => {
                    Error::NotFound(format!("{key} (upload {upload})"))
                }
                _ => s3_err("upload part", e),
            })?;
        out.e_tag()
            .map(str::to_string)
            .ok_or_else(|| Error::Backend("S3 returned no ETag for a part".into()))
    }

    async fn finish_parts(&self, key: &str, upload: &str, etags: &[String]) -> Result<u64> {
        let parts = etags
            .iter()
            .enumerate()
            .map(|(i, etag)| {
                CompletedPart::builder()
                    .part_number(i as i32 + 1)
                    .e_tag(etag)
                    .build()
            })
            .collect();
        self.client
            .complete_multipart_upload()
            .bucket(&self.config.bucket)
            .key(self.key(key))
            .upload_id(upload)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(
                |e| match e.as_service_error().and_then(|se| se.meta().code()) {
                    Some("NoSuchUpload") => Error::NotFound(format!("{key} (upload {upload})")),
                    Some("InvalidPart" | "InvalidPartOrder" | "EntityTooSmall") => {
                        Error::Invalid(format!(
                            "the parts of {key} do not fit together: {}",
                            aws_sdk_s3::error::DisplayErrorContext(&e)
                        ))
                    }
                    _ => s3_err("complete multipart upload", e),
                },
            )?;
        self.size(key)
            .await?
            .ok_or_else(|| Error::NotFound(key.into()))
    }

    async fn abort_parts(&self, key: &str, upload: &str) -> Result<()> {
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.config.bucket)
            .key(self.key(key))
            .upload_id(upload)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.meta().code() == Some("NoSuchUpload")) =>
            {
                Ok(())
            }
            Err(e) => Err(s3_err("abort multipart upload", e)),
        }
    }

    async fn presigned_part(
        &self,
        key: &str,
        upload: &str,
        number: u32,
        ttl: Duration,
    ) -> Result<Option<String>> {
        let presign = aws_sdk_s3::presigning::PresigningConfig::expires_in(ttl)
            .map_err(|e| s3_err("presigning config", e))?;
        let req = if number == 0 {
            self.client
                .put_object()
                .bucket(&self.config.bucket)
                .key(self.key(key))
                .presigned(presign)
                .await
                .map_err(|e| s3_err("presign", e))?
        } else {
            self.client
                .upload_part()
                .bucket(&self.config.bucket)
                .key(self.key(key))
                .upload_id(upload)
                .part_number(i32::try_from(number).unwrap_or(i32::MAX))
                .presigned(presign)
                .await
                .map_err(|e| s3_err("presign", e))?
        };
        Ok(Some(req.uri().to_string()))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.config.bucket)
            .prefix(self.key(prefix))
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| s3_err("list", e))?;
            for obj in page.contents() {
                if let Some(k) = obj.key() {
                    out.push(k.strip_prefix(&self.config.prefix).unwrap_or(k).to_string());
                }
            }
        }
        out.sort();
        Ok(out)
    }
}
