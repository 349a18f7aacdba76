//! The gateway's side of the cluster: an upload becomes an UploadBatch,
//! checked against the ValidationPolicy it names.

use async_trait::async_trait;
use kube::api::{Api, ObjectMeta, PostParams};
use picsift_core::backend::{NewBatch, Scheduler};
use picsift_core::policy::Policy;
use picsift_crds::{
    BATCH_ID_ANNOTATION, Notification, PolicyRef, Source, UploadBatch, UploadBatchSpec,
    ValidationPolicy,
};
use std::collections::BTreeMap;

/// The field manager of what the gateway creates.
pub const GATEWAY_FIELD_MANAGER: &str = "picsift-gateway";

/// Hands received batches to the operator as UploadBatch objects.
pub struct KubeScheduler {
    client: kube::Client,
    namespace: String,
    default_policy: String,
}

impl KubeScheduler {
    /// A scheduler creating UploadBatches in `namespace`; uploads that name
    /// no policy use `default_policy`.
    pub fn new(client: kube::Client, namespace: &str, default_policy: &str) -> Self {
        Self {
            client,
            namespace: namespace.into(),
            default_policy: default_policy.into(),
        }
    }

    /// The UploadBatch for a batch the gateway received. Its name is the
    /// batch id, so a retried create cannot make a second one.
    pub fn upload_batch(&self, batch: &NewBatch, policy: Option<&str>) -> UploadBatch {
        let mut ub = UploadBatch::new(
            &batch.id,
            UploadBatchSpec {
                source: Source {
                    key: Some(batch.staged_key.clone()),
                    prefix: None,
                },
                owner: Some(batch.owner.clone()),
                policy_ref: PolicyRef {
                    name: policy.unwrap_or(&self.default_policy).to_string(),
                },
                deadline_seconds: None,
                priority: 0,
                notification: batch
                    .callback_url
                    .as_ref()
                    .map(|url| Notification { url: url.clone() }),
            },
        );
        ub.metadata = ObjectMeta {
            name: Some(batch.id.clone()),
            namespace: Some(self.namespace.clone()),
            annotations: Some(BTreeMap::from([(
                BATCH_ID_ANNOTATION.to_string(),
                batch.id.clone(),
            )])),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                GATEWAY_FIELD_MANAGER.to_string(),
            )])),
            ..ObjectMeta::default()
        };
        ub
    }
}

fn backend(e: kube::Error) -> picsift_core::Error {
    picsift_core::Error::Backend(format!("Kubernetes API: {e}"))
}

#[async_trait]
impl Scheduler for KubeScheduler {
    async fn policy(&self, name: Option<&str>) -> picsift_core::Result<Option<Policy>> {
        let api: Api<ValidationPolicy> = Api::namespaced(self.client.clone(), &self.namespace);
        let found = api
            .get_opt(name.unwrap_or(&self.default_policy))
            .await
            .map_err(backend)?;
        Ok(found.map(|p| p.spec.to_policy()))
    }

    async fn submit(&self, batch: &NewBatch, policy: Option<&str>) -> picsift_core::Result<()> {
        let api: Api<UploadBatch> = Api::namespaced(self.client.clone(), &self.namespace);
        let pp = PostParams {
            field_manager: Some(GATEWAY_FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        match api.create(&pp, &self.upload_batch(batch, policy)).await {
            Ok(_) => Ok(()),
            // Created by an earlier attempt of this same call.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(backend(e)),
        }
    }
}
