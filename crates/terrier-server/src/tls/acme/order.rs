//! Talking to the CA with instant-acme: the account (created once, kept in
//! the store) and one order per name, validated by TLS-ALPN-01.

use anyhow::{bail, Context};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};

use super::challenge::ChallengeCert;
use super::config::AcmeConfig;
use super::stored::{account_key, StoredCert};
use crate::store::Store;

/// The account at `config.directory_url`: restored from the store, or
/// registered (agreeing to the CA's terms) and stored for every node.
pub async fn account(store: &dyn Store, config: &AcmeConfig) -> anyhow::Result<Account> {
    let key = account_key(&config.directory_url);
    if let Some(bytes) = store.get_blob(&key).await? {
        let credentials: AccountCredentials = serde_json::from_slice(&bytes).context("corrupt stored ACME account")?;
        return builder(config)?.from_credentials(credentials).await.context("restoring the ACME account");
    }
    let contact = config.contact.as_ref().map(|email| format!("mailto:{email}"));
    let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
    let new = NewAccount { contact: &contact, terms_of_service_agreed: true, only_return_existing: false };
    let (account, credentials) = builder(config)?
        .create(&new, config.directory_url.clone(), None)
        .await
        .with_context(|| format!("registering an ACME account at {}", config.directory_url))?;
    store.put_blob(&key, &serde_json::to_vec(&credentials)?).await?;
    tracing::info!(directory = %config.directory_url, id = account.id(), "ACME account registered");
    Ok(account)
}

/// Forgets the stored account (the CA no longer knows it).
pub async fn forget_account(store: &dyn Store, config: &AcmeConfig) -> anyhow::Result<()> {
    Ok(store.put_blob(&account_key(&config.directory_url), b"").await?)
}

fn builder(config: &AcmeConfig) -> anyhow::Result<instant_acme::AccountBuilder> {
    Ok(match &config.ca_root {
        Some(root) => Account::builder_with_root(root).with_context(|| format!("loading {}", root.display()))?,
        None => Account::builder().context("loading the system's trusted roots")?,
    })
}

/// Orders a certificate for `name`, answers its TLS-ALPN-01 challenge
/// (published in the store for every node) and downloads the result.
pub async fn issue(
    store: &dyn Store,
    account: &Account,
    config: &AcmeConfig,
    name: &str,
) -> anyhow::Result<StoredCert> {
    let retry = RetryPolicy::new().timeout(config.order_timeout);
    let identifiers = [Identifier::Dns(name.to_owned())];
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await.context("creating the order")?;
    let mut published = false;
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization.context("fetching an authorization")?;
        match authorization.status {
            AuthorizationStatus::Valid => continue,
            AuthorizationStatus::Pending => {}
            other => bail!("authorization is {other:?}"),
        }
        let mut challenge =
            authorization.challenge(ChallengeType::TlsAlpn01).context("the CA offers no tls-alpn-01 challenge")?;
        let digest = challenge.key_authorization().digest();
        ChallengeCert::new(name, digest.as_ref())?.publish(store, name).await?;
        published = true;
        challenge.set_ready().await.context("telling the CA the challenge is ready")?;
    }
    let outcome = finish(&mut order, &retry).await;
    if published {
        if let Err(e) = ChallengeCert::withdraw(store, name).await {
            tracing::warn!(name, error = %e, "could not remove the ACME challenge");
        }
    }
    let (key_pem, chain_pem) = outcome?;
    Ok(StoredCert { directory: config.directory_url.clone(), chain_pem, key_pem })
}

/// Waits for validation, sends the CSR, downloads the chain.
async fn finish(order: &mut instant_acme::Order, retry: &RetryPolicy) -> anyhow::Result<(String, String)> {
    let status = order.poll_ready(retry).await.context("waiting for validation")?;
    if status != OrderStatus::Ready {
        bail!("the order is {status:?} after validation");
    }
    let key_pem = order.finalize().await.context("finalizing the order")?;
    let chain_pem = order.poll_certificate(retry).await.context("downloading the certificate")?;
    Ok((key_pem, chain_pem))
}
