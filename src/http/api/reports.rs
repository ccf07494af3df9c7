//! `GET /api/reports/templates` and `GET /api/reports/templates/{key}`.

use actix_web::{web, HttpResponse};
use chrono::NaiveDate;
use serde::Deserialize;
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

use crate::base::Base;
use crate::http::auth::Caller;
use crate::http::errors::ApiError;
use crate::insights::report::TemplateRow;
use crate::insights::report::{self, ClassFilter, ReportFilter, TemplateScope};

/// Query string of the template reports; everything optional, parsed here so that a bad value
/// is a 400 naming the parameter.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// First day of sending, YYYY-MM-DD (UTC).
    pub from: Option<String>,
    /// Last day of sending, YYYY-MM-DD (UTC), included.
    pub to: Option<String>,
    /// User id of the sender.
    pub sender: Option<String>,
    /// Team id.
    pub team: Option<String>,
    /// CRM deal (X-Mailtally-Deal).
    pub deal: Option<String>,
    /// CRM lead.
    pub lead: Option<String>,
    /// CRM project.
    pub project: Option<String>,
    /// Which classes count in the rates: `human` (human + proxy, the default) or `all`.
    pub class: Option<String>,
    /// `team:ID` or `sender:ID`: whose template (keys are unique within a scope only). On one
    /// template the default is the caller's own, else the one with most sent.
    pub scope: Option<String>,
}

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

fn date(name: &str, v: &Option<String>) -> Result<Option<NaiveDate>, ApiError> {
    non_empty(v)
        .map(|s| {
            NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map_err(|_| ApiError::BadRequest(format!("`{name}` must be a date YYYY-MM-DD")))
        })
        .transpose()
}

fn id(name: &str, v: &Option<String>) -> Result<Option<i64>, ApiError> {
    non_empty(v)
        .map(|s| {
            s.parse::<i64>()
                .map_err(|_| ApiError::BadRequest(format!("`{name}` must be a numeric id")))
        })
        .transpose()
}

impl ReportQuery {
    pub fn filter(&self) -> Result<ReportFilter, ApiError> {
        let class = match non_empty(&self.class) {
            None | Some("human") => ClassFilter::Human,
            Some("all") => ClassFilter::All,
            Some(_) => {
                return Err(ApiError::BadRequest(
                    "`class` must be `human` or `all`".into(),
                ))
            }
        };
        Ok(ReportFilter {
            from: date("from", &self.from)?,
            to: date("to", &self.to)?,
            sender: id("sender", &self.sender)?,
            team: id("team", &self.team)?,
            deal: non_empty(&self.deal).map(str::to_string),
            lead: non_empty(&self.lead).map(str::to_string),
            project: non_empty(&self.project).map(str::to_string),
            template: None,
            scope: non_empty(&self.scope)
                .map(|s| s.parse::<TemplateScope>().map_err(ApiError::BadRequest))
                .transpose()?,
            class,
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateReport {
    /// The classes the rates count.
    pub class: ClassFilter,
    /// Most sent first.
    pub templates: Vec<TemplateRow>,
}

/// One row per template the caller may see with something sent.
#[utoipa::path(get, path = "/api/reports/templates", tag = "reports",
    operation_id = "report_templates",
    params(ReportQuery),
    responses(
        (status = 200, description = "OK", body = TemplateReport),
        (status = 400, description = "a bad date, id, class or scope"),
    ))]
pub async fn templates(
    ctx: web::Data<Base>,
    caller: Caller,
    q: web::Query<ReportQuery>,
) -> Result<HttpResponse, ApiError> {
    let filter = q.filter()?;
    let client = ctx.pool.get().await?;
    let rows = report::templates(&**client, caller.viewer(), &filter).await?;
    Ok(HttpResponse::Ok().json(TemplateReport {
        class: filter.class,
        templates: rows,
    }))
}

/// One template: figures, daily series (by day of sending), top links, mail clients and devices.
#[utoipa::path(get, path = "/api/reports/templates/{key}", tag = "reports",
    operation_id = "report_template",
    params(("key" = String, Path, description = "the template key"), ReportQuery),
    responses(
        (status = 200, description = "OK", body = TemplateDetail),
        (status = 400, description = "a bad date, id, class or scope"),
        (status = 404, description = "nothing sent with this key that the caller may see"),
    ))]
pub async fn template(
    ctx: web::Data<Base>,
    caller: Caller,
    key: web::Path<String>,
    q: web::Query<ReportQuery>,
) -> Result<HttpResponse, ApiError> {
    let filter = q.filter()?;
    let client = ctx.pool.get().await?;
    match report::template(&**client, caller.viewer(), &key, &filter).await? {
        Some(detail) => Ok(HttpResponse::Ok().json(detail)),
        None => Err(ApiError::NotFound("template")),
    }
}
