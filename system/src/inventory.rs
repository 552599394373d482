//! Stock per item in Redis (`inventory:<item_id>`): the admin commands `flashsale stock set` and
//! `flashsale stock get`. (The processor's atomic reservation arrives with it.)

use crate::gateway::validate::is_valid_id;
use crate::keys;
use crate::redis_conn::{Redis, RedisError};

#[derive(Debug, thiserror::Error)]
pub enum StockError {
    #[error("item id {0:?} is not valid: 1 to 100 characters of A-Z, a-z, 0-9, '_' or '-'")]
    BadItem(String),
    #[error("stock of {item} holds {value:?}, not a whole number")]
    Corrupt { item: String, value: String },
    #[error(transparent)]
    Redis(#[from] RedisError),
}

/// Sets the units left of `item`.
pub async fn set(redis: &Redis, item: &str, quantity: u64) -> Result<(), StockError> {
    check_item(item)?;
    let key = keys::inventory(item);
    redis
        .call(|mut c| async move {
            redis::cmd("SET")
                .arg(key)
                .arg(quantity)
                .query_async::<()>(&mut c)
                .await
        })
        .await?;
    Ok(())
}

/// The units left of `item`; `None` when it was never stocked.
pub async fn get(redis: &Redis, item: &str) -> Result<Option<i64>, StockError> {
    check_item(item)?;
    let key = keys::inventory(item);
    let value: Option<String> = redis
        .call(|mut c| async move { redis::cmd("GET").arg(key).query_async(&mut c).await })
        .await?;
    value
        .map(|v| {
            v.parse::<i64>().map_err(|_| StockError::Corrupt {
                item: item.to_string(),
                value: v,
            })
        })
        .transpose()
}

fn check_item(item: &str) -> Result<(), StockError> {
    if is_valid_id(item) {
        Ok(())
    } else {
        Err(StockError::BadItem(item.to_string()))
    }
}
