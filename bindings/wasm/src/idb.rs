//! Storage for the browser: the client's [`Snapshot`] as one JSON string, in IndexedDB (the
//! default) or in any JavaScript object with `load(): Promise<string | null>` and
//! `save(json: string): Promise<void>`.

use js_sys::{Function, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use zajel_client::{Error, Snapshot, Storage, StorageFuture};

#[wasm_bindgen(inline_js = r#"
const STORE = "snapshots";
function open(db) {
  return new Promise((resolve, reject) => {
    const r = indexedDB.open(db, 1);
    r.onupgradeneeded = () => r.result.createObjectStore(STORE);
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}
export async function idb_load(db, key) {
  const d = await open(db);
  try {
    return await new Promise((resolve, reject) => {
      const q = d.transaction(STORE, "readonly").objectStore(STORE).get(key);
      q.onsuccess = () => resolve(q.result === undefined ? null : q.result);
      q.onerror = () => reject(q.error);
    });
  } finally { d.close(); }
}
export async function idb_save(db, key, value) {
  const d = await open(db);
  try {
    await new Promise((resolve, reject) => {
      const t = d.transaction(STORE, "readwrite");
      t.objectStore(STORE).put(value, key);
      t.oncomplete = () => resolve();
      t.onerror = () => reject(t.error);
      t.onabort = () => reject(t.error);
    });
  } finally { d.close(); }
}
"#)]
extern "C" {
    #[wasm_bindgen(catch)]
    fn idb_load(db: &str, key: &str) -> Result<Promise, JsValue>;
    #[wasm_bindgen(catch)]
    fn idb_save(db: &str, key: &str, value: &str) -> Result<Promise, JsValue>;
}

/// The IndexedDB database every Zajel client of the page uses.
pub(crate) const DB_NAME: &str = "zajel";

fn storage_error(e: JsValue) -> Error {
    let text = e
        .as_string()
        .or_else(|| {
            Reflect::get(&e, &"message".into())
                .ok()
                .and_then(|m| m.as_string())
        })
        .unwrap_or_else(|| format!("{e:?}"));
    Error::Storage(text)
}

fn decode(value: JsValue) -> Result<Option<Snapshot>, Error> {
    if value.is_null() || value.is_undefined() {
        return Ok(None);
    }
    let text = value
        .as_string()
        .ok_or_else(|| Error::Storage("stored snapshot is not a string".into()))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::Storage(format!("stored snapshot: {e}")))
}

fn encode(snapshot: &Snapshot) -> Result<String, Error> {
    serde_json::to_string(snapshot).map_err(|e| Error::Storage(format!("encode: {e}")))
}

/// One snapshot under `key` in the `zajel` IndexedDB database.
pub(crate) struct IdbStorage {
    pub(crate) key: String,
}

impl Storage for IdbStorage {
    fn load(&self) -> StorageFuture<Option<Snapshot>> {
        let key = self.key.clone();
        Box::pin(async move {
            let p = idb_load(DB_NAME, &key).map_err(storage_error)?;
            decode(JsFuture::from(p).await.map_err(storage_error)?)
        })
    }
    fn save(&self, snapshot: Snapshot) -> StorageFuture<()> {
        let key = self.key.clone();
        Box::pin(async move {
            let text = encode(&snapshot)?;
            let p = idb_save(DB_NAME, &key, &text).map_err(storage_error)?;
            JsFuture::from(p).await.map_err(storage_error)?;
            Ok(())
        })
    }
}

/// A storage implemented in JavaScript: `{ load(), save(json) }`.
pub(crate) struct JsStorage {
    pub(crate) object: JsValue,
}

impl JsStorage {
    fn call(&self, name: &str, arg: Option<&JsValue>) -> Result<Promise, Error> {
        let f: Function = Reflect::get(&self.object, &name.into())
            .map_err(storage_error)?
            .dyn_into()
            .map_err(|_| Error::Storage(format!("storage.{name} is not a function")))?;
        let out = match arg {
            Some(a) => f.call1(&self.object, a),
            None => f.call0(&self.object),
        }
        .map_err(storage_error)?;
        Ok(Promise::resolve(&out))
    }
}

impl Storage for JsStorage {
    fn load(&self) -> StorageFuture<Option<Snapshot>> {
        let p = self.call("load", None);
        Box::pin(async move { decode(JsFuture::from(p?).await.map_err(storage_error)?) })
    }
    fn save(&self, snapshot: Snapshot) -> StorageFuture<()> {
        let p = encode(&snapshot).and_then(|t| self.call("save", Some(&JsValue::from_str(&t))));
        Box::pin(async move {
            JsFuture::from(p?).await.map_err(storage_error)?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    //! In headless Chromium (`wasm-bindgen-test`, see `scripts/test.sh`): the real IndexedDB.
    use super::*;
    use wasm_bindgen_test::wasm_bindgen_test;
    use zajel_client::{CachedView, StoredSend, Target, UserId};

    /// A contact list with one friend, as a client stores it.
    fn sample_view() -> CachedView {
        serde_json::from_str(
            r#"{"friends": [{"user": {"id": "00000000-0000-4000-8000-000000000002",
                "username": "bob", "created_at": 1}, "relation": "friends", "since": 2,
                "online": false}],
              "conversations": [{"conversation":
                "dm.00000000-0000-4000-8000-000000000001.00000000-0000-4000-8000-000000000002",
                "peer": "00000000-0000-4000-8000-000000000002", "last_message": null,
                "last_seq": 0, "unread": 0, "read_seq": 0, "peer_read_seq": 0}]}"#,
        )
        .unwrap()
    }

    /// A client started offline on a JavaScript `{ load, save }` storage shows the stored
    /// contact list at once: `cachedView()` and a `cached` event.
    #[wasm_bindgen_test]
    async fn a_js_storage_brings_back_the_contact_list() {
        let stored = Snapshot {
            view: sample_view(),
            ..Snapshot::default()
        };
        let json = serde_json::to_string(&serde_json::to_string(&stored).unwrap()).unwrap();
        let object = js_sys::Object::new();
        let load = Function::new_no_args(&format!("return Promise.resolve({json})"));
        let save = Function::new_with_args("json", "this.saved = json; return Promise.resolve()");
        Reflect::set(&object, &"load".into(), &load).unwrap();
        Reflect::set(&object, &"save".into(), &save).unwrap();
        let options = js_sys::Object::new();
        Reflect::set(&options, &"storage".into(), &object).unwrap();
        let client =
            crate::ZajelClient::start("http://127.0.0.1:9".into(), "t".into(), options.into())
                .unwrap();
        let events = js_sys::Array::new();
        let push = Function::new_with_args("e", "this.push(e)").bind0(&events);
        client.on_event(push).unwrap();
        gloo_timers::future::TimeoutFuture::new(300).await;
        let view = client.cached_view().unwrap();
        let friends: js_sys::Array = Reflect::get(&view, &"friends".into())
            .unwrap()
            .dyn_into()
            .unwrap();
        assert_eq!(friends.length(), 1);
        let cached = events
            .iter()
            .find(|e| {
                Reflect::get(e, &"type".into())
                    .unwrap()
                    .as_string()
                    .as_deref()
                    == Some("cached")
            })
            .expect("a cached event");
        let conversations: js_sys::Array = Reflect::get(&cached, &"conversations".into())
            .unwrap()
            .dyn_into()
            .unwrap();
        assert_eq!(conversations.length(), 1);
        client.close();
        gloo_timers::future::TimeoutFuture::new(100).await;
        // Closing saved the snapshot back, the view with it.
        let saved = Reflect::get(&object, &"saved".into())
            .unwrap()
            .as_string()
            .unwrap();
        let saved: Snapshot = serde_json::from_str(&saved).unwrap();
        assert_eq!(saved.view, sample_view());
    }

    wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

    #[wasm_bindgen_test]
    async fn snapshots_round_trip_through_indexeddb() {
        let storage = IdbStorage {
            key: "test-round-trip".into(),
        };
        let other = IdbStorage {
            key: "test-never-written".into(),
        };
        assert_eq!(other.load().await.unwrap(), None);
        let me: UserId = "00000000-0000-4000-8000-000000000001".parse().unwrap();
        let peer: UserId = "00000000-0000-4000-8000-000000000002".parse().unwrap();
        let conv = zajel_client::ConversationId::direct(me, peer);
        let snapshot = Snapshot {
            user: Some(me),
            cursors: [(conv, 7)].into_iter().collect(),
            outbox: vec![StoredSend {
                key: "k1".into(),
                to: Target::Peer(peer),
                body: "typed offline".into(),
                failed: None,
            }],
            view: sample_view(),
        };
        storage.save(snapshot.clone()).await.unwrap();
        assert_eq!(storage.load().await.unwrap(), Some(snapshot.clone()));
        // A later save replaces the earlier one.
        let emptied = Snapshot {
            outbox: vec![],
            ..snapshot
        };
        storage.save(emptied.clone()).await.unwrap();
        assert_eq!(storage.load().await.unwrap(), Some(emptied));
    }

    /// The JS-facing path: a client started offline with `storage: "indexeddb"` keeps a
    /// queued message across a "reload" (a second client on the same key).
    #[wasm_bindgen_test]
    async fn a_queued_message_survives_a_restart_of_the_client() {
        let options = js_sys::Object::new();
        Reflect::set(&options, &"storage".into(), &"indexeddb".into()).unwrap();
        Reflect::set(&options, &"storageKey".into(), &"test-reload".into()).unwrap();
        // Nothing listens on port 9: the client stays offline.
        let first = crate::ZajelClient::start(
            "http://127.0.0.1:9".into(),
            "t".into(),
            options.clone().into(),
        )
        .unwrap();
        let peer = "00000000-0000-4000-8000-000000000002";
        let item = first.queue(peer, "typed offline".into()).unwrap();
        let key = Reflect::get(&item, &"key".into())
            .unwrap()
            .as_string()
            .unwrap();
        gloo_timers::future::TimeoutFuture::new(300).await;
        first.close();
        gloo_timers::future::TimeoutFuture::new(300).await;
        let second =
            crate::ZajelClient::start("http://127.0.0.1:9".into(), "t".into(), options.into())
                .unwrap();
        gloo_timers::future::TimeoutFuture::new(300).await;
        let outbox: js_sys::Array = second.outbox().unwrap().dyn_into().unwrap();
        assert_eq!(outbox.length(), 1);
        let restored = outbox.get(0);
        assert_eq!(
            Reflect::get(&restored, &"key".into()).unwrap().as_string(),
            Some(key)
        );
        assert_eq!(
            Reflect::get(&restored, &"state".into())
                .unwrap()
                .as_string()
                .as_deref(),
            Some("queued")
        );
        second.close();
    }
}
