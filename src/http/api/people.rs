//! Who engaged: `GET /api/reports/templates/{key}/people`, `GET /api/messages/{id}/people`,
//! `GET /api/people/{recipient}`, and where people read:
//! `GET /api/reports/templates/{key}/geography`, `GET /api/messages/{id}/geography`.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::reports::ReportQuery;
use crate::accounts::visibility::Viewer;
use crate::base::Base;
use crate::http::auth::Caller;
use crate::http::errors::ApiError;
use crate::insights::geo::{self, Geography, Locator};
use crate::insights::people::{self, Audience, Engagement, Page, PeopleFilter, PersonRow};
use crate::insights::report::{self, ClassFilter, TemplateScope};

/// What a people list counts, beside the report's filters.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PeopleQuery {
    /// `any` (opens, clicks and replies; the default), `open`, `click` or `reply`.
    pub kind: Option<String>,
    /// Clicks on this link (its URL) only.
    pub url: Option<String>,
    /// At most this many (1-10000, default 1000).
    pub limit: Option<i64>,
    /// Skip this many.
    pub offset: Option<i64>,
}

fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl PeopleQuery {
    pub fn filter(&self, class: ClassFilter) -> Result<PeopleFilter, ApiError> {
        let engagement = match given(&self.kind) {
            None => Engagement::Any,
            Some(k) => k.parse().map_err(|_| {
                ApiError::BadRequest("`kind` must be `any`, `open`, `click` or `reply`".into())
            })?,
        };
        Ok(PeopleFilter {
            class,
            engagement,
            url: given(&self.url).map(str::to_string),
        })
    }

    fn page(&self) -> Page {
        Page {
            limit: self.limit.unwrap_or(1000).clamp(1, 10_000),
            offset: self.offset.unwrap_or(0).max(0),
        }
    }
}

/// The audience of one template for `viewer`, its scope resolved as the template report does;
/// 404 when the viewer sees nothing sent with it.
pub async fn template_audience(
    client: &impl tokio_postgres::GenericClient,
    viewer: Viewer,
    key: &str,
    q: &ReportQuery,
) -> Result<(Audience, TemplateScope, ClassFilter), ApiError> {
    let filter = q.filter()?;
    let row = report::template_row(client, viewer, key, &filter)
        .await?
        .ok_or(ApiError::NotFound("template"))?;
    Ok((
        Audience::Template {
            key: key.to_string(),
            scope: row.scope,
            filter: filter.clone(),
        },
        row.scope,
        filter.class,
    ))
}

/// The audience of one message `viewer` may see; 404 otherwise (or for a malformed id).
pub async fn message_audience(
    client: &impl tokio_postgres::GenericClient,
    viewer: Viewer,
    id: &str,
) -> Result<Audience, ApiError> {
    let id = Uuid::parse_str(id.trim()).map_err(|_| ApiError::NotFound("message"))?;
    let mut p = crate::accounts::visibility::Params::default();
    let vis = crate::accounts::visibility::visible("m", viewer, &mut p);
    let idp = p.push(id);
    client
        .query_opt(
            &format!("SELECT 1 FROM messages m WHERE m.id = {idp} AND {vis}"),
            &p.refs(),
        )
        .await?
        .ok_or(ApiError::NotFound("message"))?;
    Ok(Audience::Message(id))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PeopleList {
    /// `human`: people's events only, and only recipients with some; `all`: machines' too.
    pub class: ClassFilter,
    pub kind: Engagement,
    /// Highest engagement score first.
    pub people: Vec<PersonRow>,
}

/// The recipients of a template who opened, clicked or replied, with first and last times,
/// counts and engagement score; `class=all` adds machines' events with their class and reason.
#[utoipa::path(get, path = "/api/reports/templates/{key}/people", tag = "reports",
    operation_id = "template_people",
    params(("key" = String, Path, description = "the template key"), ReportQuery, PeopleQuery),
    responses(
        (status = 200, description = "OK", body = PeopleList),
        (status = 400, description = "a bad date, id, class, scope or kind"),
        (status = 404, description = "nothing sent with this key that the caller may see"),
    ))]
pub async fn template_people(
    ctx: web::Data<Base>,
    caller: Caller,
    key: web::Path<String>,
    q: web::Query<ReportQuery>,
    pq: web::Query<PeopleQuery>,
) -> Result<HttpResponse, ApiError> {
    let client = ctx.pool.get().await?;
    let (audience, _, class) = template_audience(&**client, caller.viewer(), &key, &q).await?;
    let filter = pq.filter(class)?;
    let rows = people::people(&**client, caller.viewer(), &audience, &filter, pq.page()).await?;
    Ok(HttpResponse::Ok().json(PeopleList {
        class,
        kind: filter.engagement,
        people: rows,
    }))
}

/// Query string of lists that take only a class.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ClassQuery {
    /// `human` (the default) or `all`.
    pub class: Option<String>,
}

impl ClassQuery {
    pub fn class(&self) -> Result<ClassFilter, ApiError> {
        match given(&self.class) {
            None | Some("human") => Ok(ClassFilter::Human),
            Some("all") => Ok(ClassFilter::All),
            Some(_) => Err(ApiError::BadRequest(
                "`class` must be `human` or `all`".into(),
            )),
        }
    }
}

/// The recipients of a message who opened, clicked or replied.
#[utoipa::path(get, path = "/api/messages/{id}/people", tag = "messages",
    operation_id = "message_people",
    params(("id" = Uuid, Path, description = "the message id"), ClassQuery, PeopleQuery),
    responses(
        (status = 200, description = "OK", body = PeopleList),
        (status = 400, description = "a bad class or kind"),
        (status = 404, description = "no such message the caller may see"),
    ))]
pub async fn message_people(
    ctx: web::Data<Base>,
    caller: Caller,
    id: web::Path<String>,
    cq: web::Query<ClassQuery>,
    pq: web::Query<PeopleQuery>,
) -> Result<HttpResponse, ApiError> {
    let class = cq.class()?;
    let filter = pq.filter(class)?;
    let client = ctx.pool.get().await?;
    let audience = message_audience(&**client, caller.viewer(), &id).await?;
    let rows = people::people(&**client, caller.viewer(), &audience, &filter, pq.page()).await?;
    Ok(HttpResponse::Ok().json(PeopleList {
        class,
        kind: filter.engagement,
        people: rows,
    }))
}

/// One recipient: every copy sent to them that the caller may see, their whole timeline
/// (opens, clicks, replies and delivery events, machines' marked) and engagement score.
#[utoipa::path(get, path = "/api/people/{recipient}", tag = "people",
    operation_id = "get_person",
    params(("recipient" = String, Path, description = "the address (case-insensitive)"), ClassQuery),
    responses(
        (status = 200, description = "OK", body = PersonDetail),
        (status = 400, description = "a bad class"),
        (status = 404, description = "no copy to this address that the caller may see"),
    ))]
pub async fn person(
    ctx: web::Data<Base>,
    caller: Caller,
    recipient: web::Path<String>,
    cq: web::Query<ClassQuery>,
) -> Result<HttpResponse, ApiError> {
    let class = cq.class()?;
    let client = ctx.pool.get().await?;
    match people::person(&**client, caller.viewer(), &recipient, class).await? {
        Some(p) => Ok(HttpResponse::Ok().json(p)),
        None => Err(ApiError::NotFound("recipient")),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GeographyReport {
    /// false when no GeoIP database is configured (GEOIP_DATABASE): then no figures at all.
    pub available: bool,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub geography: Option<Geography>,
}

fn geography_answer(g: Option<Geography>) -> HttpResponse {
    HttpResponse::Ok().json(GeographyReport {
        available: g.is_some(),
        geography: g,
    })
}

/// Countries and cities of a template's people's opens and clicks (class `human` only:
/// machines' and image proxies' addresses are not the reader's).
#[utoipa::path(get, path = "/api/reports/templates/{key}/geography", tag = "reports",
    operation_id = "template_geography",
    params(("key" = String, Path, description = "the template key"), ReportQuery),
    responses(
        (status = 200, description = "OK", body = GeographyReport),
        (status = 400, description = "a bad date, id, class or scope"),
        (status = 404, description = "nothing sent with this key that the caller may see"),
    ))]
pub async fn template_geography(
    ctx: web::Data<Base>,
    locator: web::Data<Locator>,
    caller: Caller,
    key: web::Path<String>,
    q: web::Query<ReportQuery>,
) -> Result<HttpResponse, ApiError> {
    let client = ctx.pool.get().await?;
    let (audience, _, _) = template_audience(&**client, caller.viewer(), &key, &q).await?;
    let g = geo::geography(&**client, &locator, caller.viewer(), &audience).await?;
    Ok(geography_answer(g))
}

/// Countries and cities of a message's people's opens and clicks.
#[utoipa::path(get, path = "/api/messages/{id}/geography", tag = "messages",
    operation_id = "message_geography",
    params(("id" = Uuid, Path, description = "the message id")),
    responses(
        (status = 200, description = "OK", body = GeographyReport),
        (status = 404, description = "no such message the caller may see"),
    ))]
pub async fn message_geography(
    ctx: web::Data<Base>,
    locator: web::Data<Locator>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let client = ctx.pool.get().await?;
    let audience = message_audience(&**client, caller.viewer(), &id).await?;
    let g = geo::geography(&**client, &locator, caller.viewer(), &audience).await?;
    Ok(geography_answer(g))
}
