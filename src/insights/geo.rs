//! Where people read: the country (and city, where the database has it) of people's opens and
//! clicks, from a MaxMind-format database file (GeoIP2 / GeoLite2 City or Country) named by
//! GEOIP_DATABASE. Without the file there is no geography at all, rather than figures of zero.
//!
//! Only events of class `human` are placed: an Apple MPP fetch, an image proxy (`proxy`
//! counts as a person in the reports, but its address is the provider's), a scanner or a
//! prefetch comes from an address that is not the reader's. Addresses are looked up as the
//! events table keeps them (ANONYMIZE_IP zeroes the last octet, which keeps the country); a
//! place is computed when a report asks and never stored.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;

use serde::Serialize;
use thiserror::Error;
use tokio_postgres::GenericClient;

use super::people::Audience;
use super::InsightsError;
use crate::accounts::visibility::{Params, Viewer};

#[derive(Debug, Error)]
pub enum GeoError {
    #[error("cannot read the GeoIP database {path}: {cause}")]
    Open { path: String, cause: String },
}

/// The open database, or none.
pub struct Locator {
    reader: Option<maxminddb::Reader<Vec<u8>>>,
}

/// Where an address is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// ISO 3166-1 alpha-2.
    pub country_code: String,
    /// The English name, or the code when the database has none.
    pub country: String,
    pub city: Option<String>,
}

impl Locator {
    /// No database: no geography.
    pub fn none() -> Locator {
        Locator { reader: None }
    }

    /// Opens the database at `path` (none: [`Locator::none`]).
    pub fn open(path: Option<&Path>) -> Result<Locator, GeoError> {
        let Some(path) = path else {
            return Ok(Locator::none());
        };
        let reader = maxminddb::Reader::open_readfile(path).map_err(|e| GeoError::Open {
            path: path.display().to_string(),
            cause: e.to_string(),
        })?;
        Ok(Locator {
            reader: Some(reader),
        })
    }

    pub fn available(&self) -> bool {
        self.reader.is_some()
    }

    /// The place of `ip`, when the database knows its country.
    pub fn place(&self, ip: IpAddr) -> Option<Place> {
        let reader = self.reader.as_ref()?;
        let found = reader.lookup(ip).ok()?;
        let city: maxminddb::geoip2::City = found.decode().ok()??;
        let code = city.country.iso_code?.to_string();
        Some(Place {
            country: city
                .country
                .names
                .english
                .map(str::to_string)
                .unwrap_or_else(|| code.clone()),
            country_code: code,
            city: city.city.names.english.map(str::to_string),
        })
    }
}

/// People's opens and clicks in one country.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CountryRow {
    pub country_code: String,
    pub country: String,
    pub opens: i64,
    pub clicks: i64,
    /// Distinct recipients placed there.
    pub people: i64,
}

/// People's opens and clicks in one city.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CityRow {
    pub country_code: String,
    pub country: String,
    pub city: String,
    pub opens: i64,
    pub clicks: i64,
    pub people: i64,
}

/// The places of an audience's people's opens and clicks, most events first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Geography {
    pub countries: Vec<CountryRow>,
    /// Where the database names a city.
    pub cities: Vec<CityRow>,
    /// People's opens and clicks with an address the database does not place.
    pub unplaced_events: i64,
}

#[derive(Default)]
struct Tally {
    opens: i64,
    clicks: i64,
    people: BTreeSet<String>,
}

impl Tally {
    fn add(&mut self, recipient: &str, kind: &str, n: i64) {
        if kind == "open" {
            self.opens += n;
        } else {
            self.clicks += n;
        }
        self.people.insert(recipient.to_string());
    }
}

/// The geography of `audience` for `viewer`; `None` without a database.
pub async fn geography(
    client: &impl GenericClient,
    locator: &Locator,
    viewer: Viewer,
    audience: &Audience,
) -> Result<Option<Geography>, InsightsError> {
    if !locator.available() {
        return Ok(None);
    }
    let mut p = Params::default();
    let events = super::people::placeable_events_sql(audience, viewer, &mut p);
    let rows = client
        .query(
            &format!(
                "SELECT recipient, kind, ip, count(*) FROM ({events}) x
                 GROUP BY 1, 2, 3"
            ),
            &p.refs(),
        )
        .await?;
    let mut countries: BTreeMap<(String, String), Tally> = BTreeMap::new();
    let mut cities: BTreeMap<(String, String, String), Tally> = BTreeMap::new();
    let mut unplaced = 0;
    for r in &rows {
        let (recipient, kind, ip, n): (String, String, IpAddr, i64) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        let Some(place) = locator.place(ip) else {
            unplaced += n;
            continue;
        };
        countries
            .entry((place.country_code.clone(), place.country.clone()))
            .or_default()
            .add(&recipient, &kind, n);
        if let Some(city) = place.city {
            cities
                .entry((place.country_code, place.country, city))
                .or_default()
                .add(&recipient, &kind, n);
        }
    }
    let mut countries: Vec<CountryRow> = countries
        .into_iter()
        .map(|((country_code, country), t)| CountryRow {
            country_code,
            country,
            opens: t.opens,
            clicks: t.clicks,
            people: t.people.len() as i64,
        })
        .collect();
    countries.sort_by(|a, b| {
        (b.opens + b.clicks)
            .cmp(&(a.opens + a.clicks))
            .then_with(|| a.country_code.cmp(&b.country_code))
    });
    let mut cities: Vec<CityRow> = cities
        .into_iter()
        .map(|((country_code, country, city), t)| CityRow {
            country_code,
            country,
            city,
            opens: t.opens,
            clicks: t.clicks,
            people: t.people.len() as i64,
        })
        .collect();
    cities.sort_by(|a, b| {
        (b.opens + b.clicks)
            .cmp(&(a.opens + a.clicks))
            .then_with(|| (&a.country_code, &a.city).cmp(&(&b.country_code, &b.city)))
    });
    Ok(Some(Geography {
        countries,
        cities,
        unplaced_events: unplaced,
    }))
}
