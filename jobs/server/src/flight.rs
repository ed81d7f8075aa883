//! Arrow Flight SQL and the Flight data plane of `sluice serve`.
//!
//! Flight SQL: queries (with `predict`) run on the cluster and stream back through this server;
//! prepared statements take `$1`-style parameters; GetCatalogs/GetDbSchemas/GetTables list the
//! data assets. Flight: `DoPut` on a path (or Flight SQL bulk ingest) appends the stream to a
//! data asset as one commit; `GetFlightInfo` on a path `NAME[@VERSION|@TAG]` then `DoGet` streams
//! that asset version. Actions: `submit` (a job file), `cancel` (a run id), `grant` (a role).
//! Every call is authenticated and checked against the caller's role ([`super::auth`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult,
    Any, CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables,
    CommandPreparedStatementQuery, CommandStatementIngest, CommandStatementQuery, CommandStatementUpdate,
    DoPutPreparedStatementResult, ProstMessageExt, SqlInfo, TableExistsOption, TableNotExistOption,
    TicketStatementQuery,
};
use arrow_flight::{
    Action, ActionType, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest,
    HandshakeResponse, IpcMessage, PutResult, SchemaAsIpc, Ticket, flight_descriptor,
};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::prelude::{DataFrame, SQLOptions, SessionContext};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use sluice_lake::delta::{AssetRef, Lake, WriteMode};
use sluice_engine::assets::{WriteOptions, write_asset};
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};

use super::auth::{Access, Denied, Permission, Principal, Role};
use sluice_catalog::runs::Catalog;

type DoGetStream = Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;
type ActionStream = Pin<Box<dyn Stream<Item = Result<arrow_flight::Result, Status>> + Send + 'static>>;

/// The `type_url` of a ticket for one asset version (`NAME@VERSION`).
const ASSET_TICKET: &str = "type.sluice.dev/sluice.AssetVersion";
/// The catalog and schema the assets are listed under (DataFusion's defaults, so that
/// `datafusion.public.accounts` and `accounts` name the same thing).
const CATALOG: &str = "datafusion";
const SCHEMA: &str = "public";

/// Starts `sluice run JOB --run-id ID` in the background; returns its process.
pub type Launch = Arc<dyn Fn(&std::path::Path, &str) -> crate::Result<std::process::Child> + Send + Sync>;

/// What the Flight server works with.
pub struct FlightServer {
    /// A session on the cluster, with the lake's assets by name: queries run here.
    pub cluster: SessionContext,
    /// A session in this process with the lake's object store: asset reads and writes.
    pub local: SessionContext,
    /// The lake.
    pub lake: Lake,
    /// Who may do what.
    pub access: Access,
    /// The run catalog, for submitted and cancelled runs.
    pub runs: Arc<Catalog>,
    /// Starts submitted jobs; None refuses submissions.
    pub launch: Option<Launch>,
    statements: Mutex<HashMap<String, Statement>>,
    sql_info: SqlInfoData,
}

/// A planned statement waiting for its `DoGet`, or a prepared statement.
struct Statement {
    sql: String,
    user: String,
    params: Option<ParamValues>,
    last_used: std::time::Instant,
}

/// Statements unused this long are forgotten (a client that planned and never fetched, or never
/// closed its prepared statement).
const STATEMENT_TTL: std::time::Duration = std::time::Duration::from_secs(30 * 60);

impl FlightServer {
    /// A server over `cluster` (queries) and `local` (asset reads and writes).
    pub fn new(
        cluster: SessionContext,
        local: SessionContext,
        lake: Lake,
        access: Access,
        runs: Arc<Catalog>,
        launch: Option<Launch>,
    ) -> crate::Result<Self> {
        Ok(Self { cluster, local, lake, access, runs, launch, statements: Mutex::new(HashMap::new()), sql_info: sql_info()? })
    }

    /// Who sent `metadata`, allowed to do `action`; the refusal is logged without credentials.
    fn authorize(&self, metadata: &MetadataMap, action: Permission, what: &str) -> Result<Principal, Status> {
        let header = metadata.get("authorization").and_then(|v| v.to_str().ok());
        let principal = self.access.authenticate(header).map_err(|e| refused(&e, what))?;
        principal.check(action).map_err(|e| {
            tracing::warn!(user = %principal.user, role = principal.role.name(), what, "refused");
            refused(&e, what)
        })?;
        Ok(principal)
    }

    fn remember(&self, sql: &str, user: &str, params: Option<ParamValues>) -> Result<String, Status> {
        let handle = uuid::Uuid::new_v4().to_string();
        let statement = Statement { sql: sql.to_string(), user: user.to_string(), params, last_used: std::time::Instant::now() };
        let mut statements = self.statements.lock().map_err(|_| poisoned())?;
        statements.retain(|_, s| s.last_used.elapsed() < STATEMENT_TTL);
        statements.insert(handle.clone(), statement);
        Ok(handle)
    }

    /// The statement `handle` if `user` made it; `take` forgets it (a one-shot query).
    fn statement(&self, handle: &[u8], user: &str, take: bool) -> Result<(String, Option<ParamValues>), Status> {
        let handle = String::from_utf8_lossy(handle).to_string();
        let mut statements = self.statements.lock().map_err(|_| poisoned())?;
        let found = statements.get_mut(&handle).filter(|s| s.user == user).map(|s| {
            s.last_used = std::time::Instant::now();
            (s.sql.clone(), s.params.clone())
        });
        let found = found.ok_or_else(|| {
            Status::not_found(format!(
                "no statement {handle} for user '{user}': it ran already, was closed, or belongs to another user"
            ))
        })?;
        if take {
            statements.remove(&handle);
        }
        Ok(found)
    }

    /// Plans `sql` read-only on the cluster session (no DDL, DML or SET from clients).
    async fn plan(&self, sql: &str) -> Result<DataFrame, Status> {
        // JDBC and ADBC send `?` placeholders; DataFusion binds `$1`, `$2`, ...
        let sql = numbered_placeholders(sql);
        // Registered models (`predict('churn@production', ...)`) resolve to their files.
        let (sql, _) = sluice_catalog::models::resolve::resolve_sql(&self.lake, &sql)
            .await
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
        self.cluster.sql_with_options(&sql, options).await.map_err(|e| {
            Status::invalid_argument(format!("cannot plan the query: {e}; only queries (SELECT ...) run here"))
        })
    }

    async fn run(&self, sql: &str, params: Option<ParamValues>, user: &str) -> Result<Response<DoGetStream>, Status> {
        let mut df = self.plan(sql).await?;
        if let Some(params) = params {
            df = df.with_param_values(params).map_err(|e| Status::invalid_argument(format!("binding parameters: {e}")))?;
        }
        tracing::info!(user, sql = %first_line(sql), "query");
        stream(df).await
    }

    /// Appends the batches of `data` to asset `name` (replacing its rows when `replace`) as one
    /// version; returns the rows written.
    async fn append(&self, name: &str, data: PeekableFlightDataStream, replace: bool, user: &str) -> Result<i64, Status> {
        let asset = AssetRef::parse(name).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if asset.at != sluice_lake::delta::At::Latest {
            return Err(Status::invalid_argument(format!("put: '{name}': name the asset without a version or tag")));
        }
        let mut batches = FlightRecordBatchStream::new_from_flight_data(data.map_err(FlightError::from));
        let first = batches.next().await.transpose().map_err(|e| Status::invalid_argument(format!("reading the stream: {e}")))?;
        let Some(first) = first else {
            return Err(Status::invalid_argument(format!("the stream to '{name}' holds no record batch; nothing was written")));
        };
        let schema = first.schema();
        let rest = batches.map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)));
        let all = futures::stream::once(async move { Ok(first) }).chain(rest);
        let source = OneStream { schema: schema.clone(), stream: Mutex::new(Some(Box::pin(RecordBatchStreamAdapter::new(schema.clone(), all)))) };
        let table = StreamingTable::try_new(schema, vec![Arc::new(source)]).map_err(internal)?;
        let df = self.local.read_table(Arc::new(table)).map_err(internal)?;
        let mut lineage = serde_json::Map::new();
        lineage.insert("flight_put".into(), serde_json::json!({ "user": user }));
        let mode = if replace { WriteMode::Overwrite } else { WriteMode::Append };
        let options = WriteOptions { mode, job: format!("flight put by {user}"), lineage, ..Default::default() };
        let written = write_asset(&self.lake, name, df, &options)
            .await
            .map_err(|e| Status::invalid_argument(format!("writing asset '{name}': {e}")))?;
        tracing::info!(user, asset = name, version = written.version, rows = written.rows, "put");
        Ok(i64::try_from(written.rows).unwrap_or(i64::MAX))
    }

    async fn submit(&self, body: &[u8], user: &str) -> Result<String, Status> {
        let launch = self.launch.clone().ok_or_else(|| Status::unimplemented("this server does not run submitted jobs"))?;
        let text = std::str::from_utf8(body).map_err(|_| Status::invalid_argument("submit: the job file is not UTF-8"))?;
        let spec = sluice_ingest::JobFile::parse(text, "the submitted job")
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let id = sluice_catalog::runs::new_id();
        let dir = std::env::temp_dir().join("sluice-submitted");
        std::fs::create_dir_all(&dir).map_err(|e| Status::internal(format!("creating {}: {e}", dir.display())))?;
        let path: PathBuf = dir.join(format!("{id}.toml"));
        std::fs::write(&path, text).map_err(|e| Status::internal(format!("writing {}: {e}", path.display())))?;
        let child = launch(&path, &id).map_err(|e| Status::internal(format!("starting the run: {e}")))?;
        self.runs.start("run", &spec.job.name, Some(id.clone()), Some(child.id())).await.map_err(internal)?;
        tracing::info!(user, job = %spec.job.name, run = %id, "submitted");
        Ok(id)
    }
}

/// One stream, handed to DataFusion once.
struct OneStream {
    schema: SchemaRef,
    stream: Mutex<Option<SendableRecordBatchStream>>,
}

impl std::fmt::Debug for OneStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OneStream").field("schema", &self.schema).finish()
    }
}

impl PartitionStream for OneStream {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let taken = self.stream.lock().ok().and_then(|mut s| s.take());
        taken.unwrap_or_else(|| {
            let e = datafusion::error::DataFusionError::Execution("the uploaded stream was read already".into());
            Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), futures::stream::once(async { Err(e) })))
        })
    }
}

fn refused(denied: &Denied, what: &str) -> Status {
    match denied {
        Denied::Unauthenticated(m) => Status::unauthenticated(format!("{what}: {m}")),
        Denied::Forbidden(m) => Status::permission_denied(format!("{what}: {m}")),
    }
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

fn poisoned() -> Status {
    Status::internal("statement table unavailable (a thread panicked); restart the server")
}

fn first_line(sql: &str) -> String {
    let line = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    line.chars().take(200).collect()
}

/// `sql` with each `?` placeholder numbered (`$1`, `$2`, ...) in order; strings, quoted names
/// and comments are left alone. Unparsable text is returned as it was, for the planner to report.
fn numbered_placeholders(sql: &str) -> String {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else { return sql.to_string() };
    if !tokens.iter().any(|t| matches!(t, Token::Placeholder(p) if p == "?")) {
        return sql.to_string();
    }
    let mut n = 0;
    tokens
        .iter()
        .map(|t| match t {
            Token::Placeholder(p) if p == "?" => {
                n += 1;
                format!("${n}")
            }
            other => other.to_string(),
        })
        .collect()
}

/// Streams a DataFrame's results as Flight data.
async fn stream(df: DataFrame) -> Result<Response<DoGetStream>, Status> {
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let batches = df.execute_stream().await.map_err(|e| Status::internal(format!("running the query: {e}")))?;
    let batches = batches.map_err(|e| FlightError::ExternalError(Box::new(e)));
    let data = FlightDataEncoderBuilder::new().with_schema(schema).build(batches).map_err(Status::from);
    Ok(Response::new(Box::pin(data) as DoGetStream))
}

fn one_batch(batch: arrow::record_batch::RecordBatch) -> Response<DoGetStream> {
    let data = FlightDataEncoderBuilder::new()
        .with_schema(batch.schema())
        .build(futures::stream::iter([Ok(batch)]))
        .map_err(Status::from);
    Response::new(Box::pin(data) as DoGetStream)
}

fn encode_schema(schema: &Schema) -> Result<prost::bytes::Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default()).try_into().map_err(internal)?;
    Ok(bytes)
}

fn flight_info(schema: &Schema, ticket: Vec<u8>, descriptor: FlightDescriptor) -> Result<Response<FlightInfo>, Status> {
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(internal)?
        .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

/// The parameters of a planned statement (`$1`, `$2`, ...) as a schema, in order.
fn parameter_schema(plan: &LogicalPlan) -> Result<Schema, Status> {
    let mut params: Vec<(String, Option<DataType>)> =
        plan.get_parameter_types().map_err(|e| Status::invalid_argument(e.to_string()))?.into_iter().collect();
    params.sort_by_key(|(id, _)| id.trim_start_matches('$').parse::<u64>().unwrap_or(u64::MAX));
    Ok(Schema::new(
        params.into_iter().map(|(id, t)| Field::new(id, t.unwrap_or(DataType::Utf8), true)).collect::<Vec<_>>(),
    ))
}

fn sql_info() -> crate::Result<SqlInfoData> {
    let mut builder = SqlInfoDataBuilder::new();
    builder.append(SqlInfo::FlightSqlServerName, "Sluice");
    builder.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    builder.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
    builder.append(SqlInfo::FlightSqlServerReadOnly, false);
    builder.append(SqlInfo::FlightSqlServerSql, true);
    builder.append(SqlInfo::FlightSqlServerSubstrait, false);
    builder.append(SqlInfo::FlightSqlServerBulkIngestion, true);
    builder.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    builder.build().map_err(|e| crate::Error::Invalid(format!("building the server's SqlInfo: {e}")))
}

#[tonic::async_trait]
impl FlightSqlService for FlightServer {
    type FlightService = FlightServer;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>, Status> {
        let header = request.metadata().get("authorization").and_then(|v| v.to_str().ok());
        let principal = self.access.authenticate(header).map_err(|e| refused(&e, "handshake"))?;
        let token = self.access.open_session(&principal).map_err(|e| refused(&e, "handshake"))?;
        tracing::info!(user = %principal.user, role = principal.role.name(), "handshake");
        let reply = HandshakeResponse { protocol_version: 0, payload: token.clone().into() };
        let mut response = Response::new(Box::pin(futures::stream::iter([Ok(reply)])) as Pin<Box<dyn Stream<Item = _> + Send>>);
        let value = format!("Bearer {token}").parse().map_err(|_| Status::internal("cannot encode the session token"))?;
        response.metadata_mut().insert("authorization", value);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let who = self.authorize(request.metadata(), Permission::Query, "query")?;
        let df = self.plan(&query.query).await?;
        let schema = df.schema().as_arrow().clone();
        let handle = self.remember(&query.query, &who.user, None)?;
        let ticket = TicketStatementQuery { statement_handle: handle.into_bytes().into() };
        flight_info(&schema, ticket.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let who = self.authorize(request.metadata(), Permission::Query, "query")?;
        let (sql, params) = self.statement(&ticket.statement_handle, &who.user, true)?;
        self.run(&sql, params, &who.user).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let who = self.authorize(request.metadata(), Permission::Query, "prepare")?;
        let df = self.plan(&query.query).await?;
        let dataset = df.schema().as_arrow().clone();
        let parameters = parameter_schema(df.logical_plan())?;
        let handle = self.remember(&query.query, &who.user, None)?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into_bytes().into(),
            dataset_schema: encode_schema(&dataset)?,
            parameter_schema: encode_schema(&parameters)?,
        })
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let who = self.authorize(request.metadata(), Permission::Query, "bind parameters")?;
        let (sql, _) = self.statement(&query.prepared_statement_handle, &who.user, false)?;
        let batches: Vec<_> = FlightRecordBatchStream::new_from_flight_data(request.into_inner().map_err(FlightError::from))
            .try_collect()
            .await
            .map_err(|e| Status::invalid_argument(format!("reading the parameters: {e}")))?;
        let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
            return Err(Status::invalid_argument("the parameter stream holds no row"));
        };
        let values = batch
            .columns()
            .iter()
            .map(|column| ScalarValue::try_from_array(column, 0))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Status::invalid_argument(format!("reading the parameters: {e}")))?;
        let mut statements = self.statements.lock().map_err(|_| poisoned())?;
        let handle = String::from_utf8_lossy(&query.prepared_statement_handle).to_string();
        if let Some(s) = statements.get_mut(&handle) {
            s.params = Some(ParamValues::List(values.into_iter().map(Into::into).collect()));
        }
        drop(statements);
        tracing::debug!(sql = %first_line(&sql), "parameters bound");
        Ok(DoPutPreparedStatementResult { prepared_statement_handle: Some(query.prepared_statement_handle) })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let who = self.authorize(request.metadata(), Permission::Query, "query")?;
        let (sql, _) = self.statement(&cmd.prepared_statement_handle, &who.user, false)?;
        let schema = self.plan(&sql).await?.schema().as_arrow().clone();
        flight_info(&schema, cmd.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        let who = self.authorize(request.metadata(), Permission::Query, "query")?;
        let (sql, params) = self.statement(&cmd.prepared_statement_handle, &who.user, false)?;
        self.run(&sql, params, &who.user).await
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let who = self.authorize(request.metadata(), Permission::Query, "close")?;
        self.statement(&query.prepared_statement_handle, &who.user, true).map(|_| ())
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(request.metadata(), Permission::Query, "list catalogs")?;
        let schema = query.into_builder().schema();
        flight_info(&schema, query.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.authorize(request.metadata(), Permission::Query, "list catalogs")?;
        let mut builder = query.into_builder();
        builder.append(CATALOG);
        Ok(one_batch(builder.build().map_err(internal)?))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(request.metadata(), Permission::Query, "list schemas")?;
        let schema = query.clone().into_builder().schema();
        flight_info(&schema, query.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.authorize(request.metadata(), Permission::Query, "list schemas")?;
        let mut builder = query.into_builder();
        builder.append(CATALOG, SCHEMA);
        Ok(one_batch(builder.build().map_err(internal)?))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(request.metadata(), Permission::Query, "list tables")?;
        let schema = query.clone().into_builder().schema();
        flight_info(&schema, query.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.authorize(request.metadata(), Permission::Query, "list tables")?;
        let include_schema = query.include_schema;
        let mut builder = query.into_builder();
        let assets = self.lake.list().await.map_err(internal)?;
        for asset in assets {
            let schema = if include_schema {
                let at = AssetRef { name: asset.name.clone(), at: sluice_lake::delta::At::Latest };
                self.lake.resolve(&at).await.map_err(internal)?.schema
            } else {
                Arc::new(Schema::empty())
            };
            builder.append(CATALOG, SCHEMA, &asset.name, "TABLE", &schema).map_err(internal)?;
        }
        Ok(one_batch(builder.build().map_err(internal)?))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(request.metadata(), Permission::Query, "list table types")?;
        let schema = query.into_builder().schema();
        flight_info(&schema, query.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.authorize(request.metadata(), Permission::Query, "list table types")?;
        let mut builder = query.into_builder();
        builder.append("TABLE");
        Ok(one_batch(builder.build().map_err(internal)?))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(request.metadata(), Permission::Query, "server info")?;
        let schema = query.clone().into_builder(&self.sql_info).schema();
        flight_info(&schema, query.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.authorize(request.metadata(), Permission::Query, "server info")?;
        Ok(one_batch(query.into_builder(&self.sql_info).build().map_err(internal)?))
    }

    async fn do_put_statement_update(
        &self,
        _ticket: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.authorize(request.metadata(), Permission::Write, "update")?;
        Err(Status::unimplemented(
            "SQL updates are not run here: append rows with Flight DoPut or bulk ingest, or submit a job",
        ))
    }

    async fn do_put_statement_ingest(
        &self,
        ticket: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let who = self.authorize(request.metadata(), Permission::Write, "ingest")?;
        let options = ticket.table_definition_options.unwrap_or_default();
        let exists = self.lake.exists(&ticket.table).await.map_err(internal)?;
        if !exists && options.if_not_exist == TableNotExistOption::Fail as i32 {
            return Err(Status::not_found(format!("asset '{}' does not exist and the ingest asked not to create it", ticket.table)));
        }
        if exists && options.if_exists == TableExistsOption::Fail as i32 {
            return Err(Status::already_exists(format!("asset '{}' exists and the ingest asked to fail then", ticket.table)));
        }
        let replace = exists && options.if_exists == TableExistsOption::Replace as i32;
        self.append(&ticket.table, request.into_inner(), replace, &who.user).await
    }

    async fn do_put_fallback(
        &self,
        request: Request<PeekableFlightDataStream>,
        _message: Any,
    ) -> Result<Response<<Self as FlightService>::DoPutStream>, Status> {
        let who = self.authorize(request.metadata(), Permission::Write, "put")?;
        let mut data = request.into_inner();
        let descriptor = Pin::new(&mut data).peek().await.cloned().transpose()?.and_then(|d| d.flight_descriptor);
        let name = match descriptor {
            Some(d) if d.r#type == flight_descriptor::DescriptorType::Path as i32 && d.path.len() == 1 => d.path[0].clone(),
            _ => {
                return Err(Status::invalid_argument(
                    "put: give a path descriptor with one element, the asset's name (or use Flight SQL bulk ingest)",
                ));
            }
        };
        let rows = self.append(&name, data, false, &who.user).await?;
        let result = PutResult { app_metadata: format!("{{\"asset\":\"{name}\",\"rows\":{rows}}}").into() };
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(result)]))))
    }

    async fn get_flight_info_fallback(
        &self,
        _cmd: arrow_flight::sql::Command,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let who = self.authorize(request.metadata(), Permission::Query, "read asset")?;
        let descriptor = request.into_inner();
        if descriptor.r#type != flight_descriptor::DescriptorType::Path as i32 || descriptor.path.len() != 1 {
            return Err(Status::invalid_argument(
                "give a Flight SQL command, or a path descriptor with one element: NAME, NAME@VERSION or NAME@TAG",
            ));
        }
        let asset = AssetRef::parse(&descriptor.path[0]).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let version = self.lake.resolve(&asset).await.map_err(|e| Status::not_found(e.to_string()))?;
        tracing::info!(user = %who.user, asset = %asset, version = version.version, "flight info");
        let pinned = format!("{}@{}", version.name, version.version);
        let ticket = Any { type_url: ASSET_TICKET.into(), value: pinned.into_bytes().into() };
        let rows = i64::try_from(version.rows()).unwrap_or(-1);
        let mut info = flight_info(&version.schema, ticket.encode_to_vec(), descriptor)?.into_inner();
        info.total_records = rows;
        info.total_bytes = i64::try_from(version.bytes()).unwrap_or(-1);
        Ok(Response::new(info))
    }

    async fn do_get_fallback(&self, request: Request<Ticket>, message: Any) -> Result<Response<DoGetStream>, Status> {
        let who = self.authorize(request.metadata(), Permission::Query, "read asset")?;
        if message.type_url != ASSET_TICKET {
            return Err(Status::invalid_argument(format!("unknown ticket type '{}'", message.type_url)));
        }
        let pinned = String::from_utf8(message.value.to_vec()).map_err(|_| Status::invalid_argument("bad asset ticket"))?;
        AssetRef::parse(&pinned).map_err(|e| Status::invalid_argument(e.to_string()))?;
        tracing::info!(user = %who.user, asset = %pinned, "get");
        let df = self.local.sql(&format!("SELECT * FROM \"{pinned}\"")).await.map_err(|e| Status::not_found(e.to_string()))?;
        stream(df).await
    }

    async fn do_action_fallback(&self, request: Request<Action>) -> Result<Response<ActionStream>, Status> {
        let kind = request.get_ref().r#type.clone();
        let reply = |body: String| {
            let result = arrow_flight::Result { body: body.into() };
            Ok(Response::new(Box::pin(futures::stream::iter([Ok(result)])) as ActionStream))
        };
        match kind.as_str() {
            "submit" => {
                let who = self.authorize(request.metadata(), Permission::Submit, "submit")?;
                let id = self.submit(&request.get_ref().body, &who.user).await?;
                reply(id)
            }
            "cancel" => {
                let who = self.authorize(request.metadata(), Permission::Operate, "cancel")?;
                let id = String::from_utf8_lossy(&request.get_ref().body).trim().to_string();
                let run = self.runs.cancel(&id).await.map_err(|e| Status::failed_precondition(e.to_string()))?;
                tracing::info!(user = %who.user, run = %id, "cancel");
                reply(run.status.to_string())
            }
            "grant" => {
                let who = self.authorize(request.metadata(), Permission::Grant, "grant")?;
                let body = String::from_utf8_lossy(&request.get_ref().body).to_string();
                let (user, role) = body
                    .split_once('=')
                    .ok_or_else(|| Status::invalid_argument("grant: the body is USER=ROLE, e.g. ana=operator"))?;
                let role = Role::parse(role).map_err(|e| Status::invalid_argument(e.to_string()))?;
                self.access.grant(user.trim(), role).map_err(|e| refused(&e, "grant"))?;
                tracing::info!(user = %who.user, grantee = user.trim(), role = role.name(), "grant");
                reply(format!("{}={}", user.trim(), role.name()))
            }
            other => Err(Status::invalid_argument(format!(
                "unknown action '{other}': Sluice serves submit, cancel, grant and the Flight SQL actions"
            ))),
        }
    }

    async fn list_custom_actions(&self) -> Option<Vec<Result<ActionType, Status>>> {
        let action = |name: &str, description: &str| Ok(ActionType { r#type: name.into(), description: description.into() });
        Some(vec![
            action("submit", "Run a job file (its TOML as the body); returns the run id. Role: data_scientist."),
            action("cancel", "Cancel a run (its id as the body). Role: operator."),
            action("grant", "Give a user a role (USER=ROLE as the body). Role: owner."),
        ])
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_marks_become_numbered_placeholders() {
        assert_eq!(
            numbered_placeholders("SELECT a FROM t WHERE x < ? AND y = '?' AND \"?\" = ? -- ?\n"),
            "SELECT a FROM t WHERE x < $1 AND y = '?' AND \"?\" = $2 -- ?\n"
        );
        assert_eq!(numbered_placeholders("SELECT $1"), "SELECT $1");
    }
}
