//! Profiling inside a plan: [`ProfileExec`] passes its input's batches through unchanged while it
//! sketches some of their columns, and when its partition ends writes the sketch to
//! `TARGET/SIDE-PARTITION-SLICE.json` in the object store (SLICE names the files it read). Over a scan it profiles the data read; the
//! [`ProfilingPlanner`] puts a second one under the write of the same plan, so what a job
//! writes (the predictions) is profiled in the same pass. A task run again overwrites its own
//! partition's file, so a retried task is never counted twice.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::sink::DataSinkExec;
use datafusion::execution::TaskContext;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::catalog::Session;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, ReplaceChildrenOptions,
    SendableRecordBatchStream,
};
use futures::StreamExt;
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};

use super::{ColumnSpec, Profile, ProfileSpec};

/// Marks an encoded [`ProfileExec`] in a physical plan (the rest is its state as JSON).
pub const PROFILE_SCAN: &[u8] = b"sluice.profile.v1\n";

/// Which side of a job a [`ProfileExec`] sketches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The data read.
    Input,
    /// What is written.
    Output,
}

impl Side {
    fn as_str(self) -> &'static str {
        match self {
            Self::Input => "input",
            Self::Output => "output",
        }
    }
}

/// Passes batches through and sketches `columns` of them; see the module docs.
#[derive(Debug, Clone)]
pub struct ProfileExec {
    input: Arc<dyn ExecutionPlan>,
    spec: ProfileSpec,
    side: Side,
    properties: Arc<PlanProperties>,
}

/// A [`ProfileExec`] as it travels.
#[derive(Serialize, Deserialize)]
struct Encoded {
    spec: ProfileSpec,
    side: Side,
}

impl ProfileExec {
    /// Profiles `input` as `spec` says for `side`.
    pub fn new(input: Arc<dyn ExecutionPlan>, spec: ProfileSpec, side: Side) -> Self {
        let properties = Arc::clone(input.properties());
        Self { input, spec, side, properties }
    }

    /// The input side's sketch over a scan.
    pub fn over_scan(input: Arc<dyn ExecutionPlan>, spec: ProfileSpec) -> Self {
        Self::new(input, spec, Side::Input)
    }

    /// Its state, for the codec.
    pub fn encode(&self, buf: &mut Vec<u8>) -> Result<()> {
        buf.extend_from_slice(PROFILE_SCAN);
        serde_json::to_writer(buf, &Encoded { spec: self.spec.clone(), side: self.side })
            .map_err(|e| DataFusionError::Internal(format!("cannot encode a profile step: {e}")))
    }

    /// Rebuilds it from [`Self::encode`]'s bytes (after the marker) over `input`.
    pub fn decode(json: &[u8], input: Arc<dyn ExecutionPlan>) -> Result<Self> {
        let e: Encoded = serde_json::from_slice(json)
            .map_err(|e| DataFusionError::Internal(format!("cannot decode a profile step: {e}")))?;
        Ok(Self::new(input, e.spec, e.side))
    }

    fn columns(&self) -> &[ColumnSpec] {
        match self.side {
            Side::Input => &self.spec.inputs,
            Side::Output => &self.spec.outputs,
        }
    }
}

impl DisplayAs for ProfileExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.columns().iter().map(|c| c.name.as_str()).collect();
        write!(f, "ProfileExec: {} [{}] -> {}", self.side.as_str(), names.join(", "), self.spec.target)
    }
}

impl ExecutionPlan for ProfileExec {
    fn name(&self) -> &str {
        "ProfileExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal("ProfileExec takes one input".into()));
        }
        Ok(Arc::new(Self::new(children.swap_remove(0), self.spec.clone(), self.side)))
    }

    fn with_new_children(self: Arc<Self>, children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let mut input = self.input.execute(partition, Arc::clone(&context))?;
        let schema = input.schema();
        // Ballista gives each task a plan whose scan holds only that task's files, run as its
        // partition 0: the file is named after what the task reads too, so tasks never share a
        // file, and a task run again overwrites its own.
        let slice = {
            use std::hash::{Hash, Hasher};
            let mut h = std::hash::DefaultHasher::new();
            datafusion::physical_plan::displayable(self.input.as_ref()).indent(false).to_string().hash(&mut h);
            h.finish()
        };
        let target = url::Url::parse(&format!("{}/", self.spec.target.trim_end_matches('/')))
            .and_then(|u| u.join(&format!("{}-{partition}-{slice:016x}.json", self.side.as_str())))
            .map_err(|e| DataFusionError::Execution(format!("profile target '{}': {e}", self.spec.target)))?;
        let store = context.runtime_env().object_store(ObjectStoreUrl::parse(&target[..url::Position::BeforePath])?)?;
        let path = object_store::path::Path::from_url_path(target.path())
            .map_err(|e| DataFusionError::Execution(format!("profile target {target}: {e}")))?;
        let mut profile = Profile::new(self.columns());
        let stream = async_stream::try_stream! {
            while let Some(batch) = input.next().await {
                let batch = batch?;
                profile.add(&batch)?;
                yield batch;
            }
            let bytes = serde_json::to_vec(&profile)
                .map_err(|e| DataFusionError::Execution(format!("profile of partition {partition}: {e}")))?;
            store.put(&path, bytes.into()).await
                .map_err(|e| DataFusionError::Execution(format!("writing the profile {target}: {e}")))?;
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// Plans as DataFusion does, then puts an output-side [`ProfileExec`] under every write whose
/// input holds an input-side one with output columns: the written rows are profiled in the same
/// pass as the read. A query planner rather than an optimizer rule, because Ballista's adaptive
/// planner replaces the session's optimizer rules with its own.
#[derive(Debug, Default)]
pub struct ProfilingPlanner;

/// The planner as a session takes it.
pub fn profiling_planner() -> Arc<dyn QueryPlanner + Send + Sync> {
    Arc::new(ProfilingPlanner)
}

#[async_trait::async_trait]
impl QueryPlanner for ProfilingPlanner {
    async fn create_physical_plan(&self, logical_plan: &LogicalPlan, state: &dyn Session) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = DefaultPhysicalPlanner::default().create_physical_plan(logical_plan, state).await?;
        profile_outputs(plan)
    }
}

/// The spec of the first input-side profile under `plan`.
fn input_profile(plan: &Arc<dyn ExecutionPlan>) -> Option<ProfileSpec> {
    if let Some(p) = plan.downcast_ref::<ProfileExec>() {
        return (p.side == Side::Input).then(|| p.spec.clone());
    }
    plan.children().into_iter().find_map(input_profile)
}

/// Wraps the input of each write over a profiled scan (see [`ProfilingPlanner`]).
pub fn profile_outputs(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_down(|node| {
        let Some(sink) = node.downcast_ref::<DataSinkExec>() else { return Ok(Transformed::no(node)) };
        let input = Arc::clone(sink.input());
        let done = input.downcast_ref::<ProfileExec>().is_some_and(|p| p.side == Side::Output);
        let spec = match input_profile(&input) {
            Some(spec) if !done && !spec.outputs.is_empty() => spec,
            _ => return Ok(Transformed::no(node)),
        };
        let wrapped: Arc<dyn ExecutionPlan> = Arc::new(ProfileExec::new(input, spec, Side::Output));
        let node = node.replace_children(vec![wrapped], ReplaceChildrenOptions::new(ChildrenPropertiesMode::Keep))?;
        Ok(Transformed::yes(node))
    })
    .map(|t| t.data)
}
