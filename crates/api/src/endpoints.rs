//! The one table of the API's endpoints, which the node builds its router from, and the
//! OpenAPI document generated from it and from the contract's types.

use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem, PathsBuilder,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::{
    ContentBuilder, InfoBuilder, OpenApi, Ref, RefOr, Required, ResponseBuilder, Schema,
};
use utoipa::{IntoParams, OpenApi as _, PartialSchema, ToSchema};

use crate::*;

/// What an endpoint does: the node maps each to its handler with an exhaustive match, so an
/// endpoint added here without a handler, or a handler without an entry here, does not build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    ListWriters,
    ListProviders,
    ListShadows,
    CreateShadow,
    DeleteShadows,
    ExposeShadow,
    UnexposeShadow,
    ListShadowStorage,
    AddShadowStorage,
    ResizeShadowStorage,
    StoreStatus,
    CreateStorageGroup,
    AddDatabase,
    Mount,
    Dismount,
    MailLoad,
    MailCount,
    Backup,
    BackupSets,
    Verify,
    Restore,
    Events,
    Metrics,
    OpenApi,
    DagStatus,
    ListCopies,
    AddCopy,
    RemoveCopy,
    SuspendCopy,
    ResumeCopy,
    ReseedCopy,
    ActivateCopy,
    CopySettings,
    MailDeliver,
    MailCheck,
    ListSchedules,
    EventStream,
}

/// The HTTP methods the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Post,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
        }
    }
}

/// One route of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub op: Op,
    pub method: Method,
    /// The path, with `{name}` for a path parameter (axum's and OpenAPI's notation).
    pub path: &'static str,
    pub summary: &'static str,
    /// Streams its progress as NDJSON when asked with `Accept: application/x-ndjson`.
    pub streams: bool,
}

const fn ep(op: Op, method: Method, path: &'static str, summary: &'static str) -> Endpoint {
    Endpoint { op, method, path, summary, streams: false }
}

const fn job(op: Op, path: &'static str, summary: &'static str) -> Endpoint {
    Endpoint { op, method: Method::Post, path, summary, streams: true }
}

use Method::{Get, Post};

/// Every route of the API.
pub const ENDPOINTS: &[Endpoint] = &[
    ep(Op::ListWriters, Get, "/v1/writers", "The registered writers, their state and last error"),
    ep(Op::ListProviders, Get, "/v1/providers", "The snapshot providers and their volumes"),
    ep(Op::ListShadows, Get, "/v1/shadows", "The shadow copies that exist"),
    ep(Op::CreateShadow, Post, "/v1/shadows", "Creates a persistent shadow copy of a volume"),
    ep(Op::DeleteShadows, Post, "/v1/shadows/delete", "Deletes shadow copies"),
    ep(
        Op::ExposeShadow,
        Post,
        "/v1/shadows/expose",
        "Mounts a shadow copy read-only at a directory (FUSE)",
    ),
    ep(Op::UnexposeShadow, Post, "/v1/shadows/unexpose", "Unmounts an exposed shadow copy"),
    ep(Op::ListShadowStorage, Get, "/v1/shadowstorage", "Each volume's shadow storage"),
    ep(
        Op::AddShadowStorage,
        Post,
        "/v1/shadowstorage",
        "Puts a volume's shadow storage on a volume",
    ),
    ep(Op::ResizeShadowStorage, Post, "/v1/shadowstorage/resize", "Changes a shadow storage limit"),
    ep(Op::StoreStatus, Get, "/v1/store", "Each storage group's status"),
    ep(Op::CreateStorageGroup, Post, "/v1/store", "Creates and mounts a storage group"),
    ep(Op::AddDatabase, Post, "/v1/store/{sg}/databases", "Adds a database to a storage group"),
    ep(Op::Mount, Post, "/v1/store/{sg}/mount", "Mounts a storage group"),
    ep(Op::Dismount, Post, "/v1/store/{sg}/dismount", "Dismounts a storage group"),
    ep(Op::MailLoad, Post, "/v1/mail/load", "Delivers generated mail to a database"),
    ep(Op::MailCount, Get, "/v1/mail/count", "Counts and digests a database's messages"),
    job(Op::Backup, "/v1/backup", "Backs up a storage group into a repository"),
    ep(Op::BackupSets, Get, "/v1/backup/sets", "The backup sets of a repository"),
    job(Op::Verify, "/v1/backup/verify", "Verifies a backup set"),
    job(Op::Restore, "/v1/restore", "Restores a backup set"),
    ep(Op::Events, Get, "/v1/events", "The event trail, filtered"),
    ep(Op::Metrics, Get, "/metrics", "Figures in the Prometheus text format"),
    ep(Op::OpenApi, Get, "/v1/openapi.json", "This document"),
    ep(Op::DagStatus, Get, "/v1/dag", "The DAG and its members, up or down"),
    ep(Op::ListCopies, Get, "/v1/copies", "Every copy of the storage groups, with its queues"),
    ep(Op::AddCopy, Post, "/v1/copies", "Adds a passive copy on a member and seeds it"),
    ep(Op::RemoveCopy, Post, "/v1/copies/remove", "Removes a passive copy"),
    ep(Op::SuspendCopy, Post, "/v1/copies/suspend", "Suspends a copy's log copying and replay"),
    ep(Op::ResumeCopy, Post, "/v1/copies/resume", "Resumes a suspended or failed copy"),
    ep(Op::ReseedCopy, Post, "/v1/copies/reseed", "Seeds a copy again"),
    ep(
        Op::ActivateCopy,
        Post,
        "/v1/copies/activate",
        "Moves the active copy to a member (switchover)",
    ),
    ep(
        Op::CopySettings,
        Post,
        "/v1/copies/settings",
        "Sets a storage group's mount dial and synchronous copies",
    ),
    ep(Op::MailDeliver, Post, "/v1/mail/deliver", "Delivers one message, answered once durable"),
    ep(Op::MailCheck, Post, "/v1/mail/check", "Which of the listed messages are missing"),
    ep(Op::ListSchedules, Get, "/v1/schedules", "The schedules, their last and next runs"),
    ep(
        Op::EventStream,
        Get,
        "/v1/events/stream",
        "The event trail live, as server-sent events (the trail since `since_ms` first)",
    ),
];

/// The schemas of the contract, collected (with the types they contain) by utoipa.
#[derive(utoipa::OpenApi)]
#[openapi(components(schemas(
    ErrorBody,
    WriterList,
    ProviderList,
    ShadowList,
    CreateShadow,
    CreatedShadow,
    DeleteShadows,
    DeletedShadows,
    ExposeShadow,
    UnexposeShadow,
    Exposures,
    ShadowStorageList,
    AddShadowStorage,
    ResizeShadowStorage,
    StoreStatus,
    TruncationStatus,
    CreateStorageGroup,
    CreateDatabase,
    CreatedStorageGroup,
    CreatedDatabase,
    Mounted,
    MailLoad,
    MailLoaded,
    MailCount,
    BackupRequest,
    BackupReport,
    SetList,
    RepoFigures,
    SetVerification,
    VerifyRequest,
    VerifyReport,
    RestoreRequest,
    RestoreReport,
    EventList,
    Event,
    DagStatus,
    CopyAdd,
    CopyChange,
    CopyList,
    GroupRow,
    CopyActivate,
    CopyActivated,
    CopySettings,
    MailDeliver,
    MailDelivered,
    MailCheck,
    MailChecked,
    ScheduleList,
)))]
struct Components;

fn schema_ref<T: ToSchema>() -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(T::name()))
}

/// What one operation takes and answers, for the document.
struct Shape {
    request: Option<RefOr<Schema>>,
    query: Vec<utoipa::openapi::path::Parameter>,
    response: (&'static str, RefOr<Schema>),
    /// The schema of a progress line, for the endpoints that stream.
    progress: Option<RefOr<Schema>>,
}

fn get<R: ToSchema>() -> Shape {
    Shape {
        request: None,
        query: Vec::new(),
        response: ("application/json", schema_ref::<R>()),
        progress: None,
    }
}

fn query<Q: IntoParams, R: ToSchema>() -> Shape {
    Shape { query: Q::into_params(|| Some(ParameterIn::Query)), ..get::<R>() }
}

fn post<B: ToSchema, R: ToSchema>() -> Shape {
    Shape { request: Some(schema_ref::<B>()), ..get::<R>() }
}

fn streaming<B: ToSchema, R: ToSchema>() -> Shape {
    Shape { progress: Some(ProgressLine::<R>::schema()), ..post::<B, R>() }
}

fn shape(op: Op) -> Shape {
    match op {
        Op::ListWriters => get::<WriterList>(),
        Op::ListProviders => get::<ProviderList>(),
        Op::ListShadows => get::<ShadowList>(),
        Op::CreateShadow => post::<CreateShadow, CreatedShadow>(),
        Op::DeleteShadows => post::<DeleteShadows, DeletedShadows>(),
        Op::ExposeShadow => post::<ExposeShadow, Exposures>(),
        Op::UnexposeShadow => post::<UnexposeShadow, Exposures>(),
        Op::ListShadowStorage => get::<ShadowStorageList>(),
        Op::AddShadowStorage => post::<AddShadowStorage, ShadowStorageList>(),
        Op::ResizeShadowStorage => post::<ResizeShadowStorage, ShadowStorageList>(),
        Op::StoreStatus => get::<StoreStatus>(),
        Op::CreateStorageGroup => post::<CreateStorageGroup, CreatedStorageGroup>(),
        Op::AddDatabase => post::<CreateDatabase, CreatedDatabase>(),
        Op::Mount | Op::Dismount => get::<Mounted>(),
        Op::MailLoad => post::<MailLoad, MailLoaded>(),
        Op::MailCount => query::<MailCountQuery, MailCount>(),
        Op::Backup => streaming::<BackupRequest, BackupReport>(),
        Op::BackupSets => query::<RepoQuery, SetList>(),
        Op::Verify => streaming::<VerifyRequest, VerifyReport>(),
        Op::Restore => streaming::<RestoreRequest, RestoreReport>(),
        Op::Events => query::<EventQuery, EventList>(),
        Op::Metrics => Shape {
            response: ("text/plain; version=0.0.4", String::schema()),
            ..get::<ErrorBody>()
        },
        Op::DagStatus => get::<DagStatus>(),
        Op::ListCopies => query::<CopyQuery, CopyList>(),
        Op::AddCopy => post::<CopyAdd, CopyList>(),
        Op::RemoveCopy | Op::SuspendCopy | Op::ResumeCopy | Op::ReseedCopy => {
            post::<CopyChange, CopyList>()
        }
        Op::ActivateCopy => post::<CopyActivate, CopyActivated>(),
        Op::CopySettings => post::<CopySettings, CopyList>(),
        Op::OpenApi => Shape {
            response: ("application/json", utoipa::openapi::ObjectBuilder::new().into()),
            ..get::<ErrorBody>()
        },
        Op::MailDeliver => post::<MailDeliver, MailDelivered>(),
        Op::MailCheck => post::<MailCheck, MailChecked>(),
        Op::ListSchedules => get::<ScheduleList>(),
        // Each server-sent event's `data` is one Event (JSON).
        Op::EventStream => Shape {
            response: (EVENT_STREAM, schema_ref::<Event>()),
            ..query::<EventQuery, EventList>()
        },
    }
}

/// The names of a path's `{parameters}`.
fn path_parameters(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
}

/// The OpenAPI document of the API: one path item per entry of [`ENDPOINTS`].
pub fn openapi() -> OpenApi {
    let mut doc = Components::openapi();
    doc.info = InfoBuilder::new()
        .title("Shadowcopy node API")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(
            "JSON over HTTP/1.1 on the node's Unix socket or, with `Authorization: Bearer \
             <token>`, on TCP. Errors answer an ErrorBody with a stable `code`. Long jobs \
             stream their progress as NDJSON lines (ProgressLine) when asked with \
             `Accept: application/x-ndjson`.",
        ))
        .build();
    let mut paths = PathsBuilder::new();
    for e in ENDPOINTS {
        let s = shape(e.op);
        let mut op = OperationBuilder::new()
            .operation_id(Some(format!("{:?}", e.op)))
            .summary(Some(e.summary));
        for name in path_parameters(e.path) {
            op = op.parameter(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(String::schema())),
            );
        }
        for p in s.query {
            op = op.parameter(p);
        }
        if let Some(body) = s.request {
            op = op.request_body(Some(
                RequestBodyBuilder::new()
                    .required(Some(Required::True))
                    .content("application/json", ContentBuilder::new().schema(Some(body)).build())
                    .build(),
            ));
        }
        let mut ok = ResponseBuilder::new()
            .description("success")
            .content(s.response.0, ContentBuilder::new().schema(Some(s.response.1)).build());
        if let Some(line) = s.progress {
            ok = ok.content(NDJSON, ContentBuilder::new().schema(Some(line)).build());
        }
        let failed = ResponseBuilder::new().description("the request failed").content(
            "application/json",
            ContentBuilder::new().schema(Some(schema_ref::<ErrorBody>())).build(),
        );
        op = op.response("200", ok).response("default", failed);
        let method = match e.method {
            Method::Get => HttpMethod::Get,
            Method::Post => HttpMethod::Post,
        };
        paths = paths.path(e.path, PathItem::new(method, op.build()));
    }
    doc.paths = paths.build();
    doc
}
