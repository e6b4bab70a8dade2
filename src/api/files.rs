//! Files for the API: uploaded once (`POST /api/v1/files`, multipart), attached by id to
//! any number of later messages, read back as metadata, deleted.

use actix_multipart::form::MultipartForm;
use actix_multipart::form::bytes::Bytes;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use serde::Serialize;

use super::auth::ApiCaller;
use super::endpoints::timestamp;
use super::model::NewApiFile;
use super::problem::responses;
use super::queries;
use crate::error::AppError;
use crate::state::AppState;

/// The upload: one part named `file`.
#[derive(MultipartForm)]
#[multipart(deny_unknown_fields)]
pub struct FileUpload {
    /// The file.
    file: Bytes,
}

/// A file as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FileView {
    /// Id (for `attachments`).
    pub id: i64,
    /// File name as it will be sent.
    pub name: String,
    /// MIME type.
    pub content_type: String,
    /// Bytes.
    pub size: i64,
    /// Upload time.
    pub created_at: String,
}

/// The upload as the OpenAPI document describes it.
#[derive(utoipa::ToSchema)]
#[expect(
    dead_code,
    reason = "describes the multipart body for the OpenAPI document"
)]
pub struct FileUploadDoc {
    /// The file.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

#[utoipa::path(
    post,
    path = "/api/v1/files",
    tag = "files",
    request_body(content = inline(FileUploadDoc), content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "Stored", body = FileView),
        (status = 400, response = responses::Malformed),
        (status = 401, response = responses::Unauthorized),
        (status = 413, response = responses::TooLarge),
        (status = 422, response = responses::Invalid),
        (status = 429, response = responses::RateLimited)
    ),
    security(("bearer" = []))
)]
/// `POST /api/v1/files` (multipart, part `file`): 201 with its id.
pub async fn upload(
    state: web::Data<AppState>,
    caller: ApiCaller,
    form: MultipartForm<FileUpload>,
) -> Result<HttpResponse, AppError> {
    let FileUpload { file } = form.into_inner();
    let limit = state.settings.attachment_limit_mb * 1024 * 1024;
    if file.data.len() > limit {
        return Err(AppError::field(
            "file",
            format!(
                "At most {} MB per file.",
                state.settings.attachment_limit_mb
            ),
        ));
    }
    let name =
        crate::messages::compose::file_name(file.file_name.as_deref().unwrap_or("attachment"));
    let content_type = file
        .content_type
        .as_ref()
        .map(ToString::to_string)
        .filter(|t| !t.chars().any(char::is_control))
        .unwrap_or_else(|| "application/octet-stream".into());
    let now = crate::db::now();
    let row = NewApiFile {
        workspace_id: caller.workspace.id,
        file_name: name.clone(),
        content_type: content_type.clone(),
        size: i64::try_from(file.data.len()).unwrap_or(i64::MAX),
        data: file.data.to_vec(),
        created_at: now,
    };
    let size = row.size;
    let id = state
        .db
        .write(move |conn| Ok(queries::insert_file(conn, &row)?))
        .await?;
    Ok(HttpResponse::build(StatusCode::CREATED).json(FileView {
        id,
        name,
        content_type,
        size,
        created_at: timestamp(now),
    }))
}

fn file_id(path: &str) -> Result<i64, AppError> {
    path.parse::<i64>().map_err(|_| AppError::NoSuch("file"))
}

#[utoipa::path(
    get,
    path = "/api/v1/files/{id}",
    tag = "files",
    params(("id" = i64, Path, description = "File id")),
    responses(
        (status = 200, description = "The file's metadata", body = FileView),
        (status = 401, response = responses::Unauthorized),
        (status = 404, response = responses::NotFound),
        (status = 429, response = responses::RateLimited)
    ),
    security(("bearer" = []))
)]
/// `GET /api/v1/files/{id}`: its name, type, size and upload time.
pub async fn show(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let id = file_id(&path)?;
    let workspace = caller.workspace.id;
    let info = state
        .db
        .run(move |conn| Ok(queries::file_info(conn, workspace, id)?))
        .await?
        .ok_or(AppError::NoSuch("file"))?;
    Ok(HttpResponse::Ok().json(FileView {
        id: info.id,
        name: info.file_name,
        content_type: info.content_type,
        size: info.size,
        created_at: timestamp(info.created_at),
    }))
}

#[utoipa::path(
    delete,
    path = "/api/v1/files/{id}",
    tag = "files",
    params(("id" = i64, Path, description = "File id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, response = responses::Unauthorized),
        (status = 404, response = responses::NotFound),
        (status = 429, response = responses::RateLimited)
    ),
    security(("bearer" = []))
)]
/// `DELETE /api/v1/files/{id}`: 204. Messages it was attached to keep their copy.
pub async fn delete(
    state: web::Data<AppState>,
    caller: ApiCaller,
    path: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let id = file_id(&path)?;
    let workspace = caller.workspace.id;
    let deleted = state
        .db
        .write(move |conn| Ok(queries::delete_file(conn, workspace, id)?))
        .await?;
    if !deleted {
        return Err(AppError::NoSuch("file"));
    }
    Ok(HttpResponse::NoContent().finish())
}
