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
