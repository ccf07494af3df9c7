//! `GET /api/reports/templates` and `GET /api/reports/templates/{key}`.

use actix_web::{web, HttpResponse};
use chrono::NaiveDate;
use serde::Deserialize;

use crate::base::Base;
use crate::http::auth::Caller;
use crate::http::errors::ApiError;
use crate::insights::report::{self, ClassFilter, ReportFilter, TemplateScope};

/// Query string of the template reports; everything optional, parsed here so that a bad value
/// is a 400 naming the parameter.
#[derive(Debug, Default, Deserialize)]
pub struct ReportQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    pub sender: Option<String>,
    pub team: Option<String>,
    pub deal: Option<String>,
    pub lead: Option<String>,
    pub project: Option<String>,
    pub class: Option<String>,
    /// `team:ID` or `sender:ID`: whose template (keys are unique within a scope only).
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

pub async fn templates(
    ctx: web::Data<Base>,
    caller: Caller,
    q: web::Query<ReportQuery>,
) -> Result<HttpResponse, ApiError> {
    let filter = q.filter()?;
    let client = ctx.pool.get().await?;
    let rows = report::templates(&**client, caller.viewer(), &filter).await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "class": filter.class,
        "templates": rows,
    })))
}

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
