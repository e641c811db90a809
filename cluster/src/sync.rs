//! The cluster's power sync settings (`config/sync`), which every conductor watches.

use crate::{Cluster, ClusterError};
use ferric_model::{encode, SyncConfig};

impl Cluster {
    /// The settings; the default (`observe`) when none were set.
    pub async fn sync_config(&self) -> Result<SyncConfig, ClusterError> {
        let key = self.keys().sync_config();
        Ok(self
            .get_record(key)
            .await?
            .map(|(r, _)| r)
            .unwrap_or_default())
    }

    pub async fn set_sync_config(&self, config: &SyncConfig) -> Result<(), ClusterError> {
        self.kv()
            .put(self.keys().sync_config(), encode(config), None)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}
