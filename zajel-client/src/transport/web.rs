//! Browser transport: `web_sys::WebSocket`. The socket's JS closures are owned by the task
//! that pumps outgoing frames and are dropped (after detaching them) when the socket closes;
//! nothing is leaked with `Closure::forget`.

use super::{Incoming, Socket};
use crate::error::Error;
use tokio::sync::{mpsc, oneshot};
use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;
use web_sys::{CloseEvent, Event, MessageEvent, WebSocket};

struct Handlers {
    ws: WebSocket,
    _open: Closure<dyn FnMut(Event)>,
    _message: Closure<dyn FnMut(MessageEvent)>,
    _close: Closure<dyn FnMut(CloseEvent)>,
    _error: Closure<dyn FnMut(Event)>,
}

impl Drop for Handlers {
    fn drop(&mut self) {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        self.ws.set_onerror(None);
        let _ = self.ws.close_with_code(1000);
    }
}

pub(crate) async fn connect(url: String) -> Result<Socket, Error> {
    let ws = WebSocket::new(&url).map_err(|e| Error::Transport(crate::http::js_message(&e)))?;
    ws.set_binary_type(web_sys::BinaryType::Arraybuffer);
    let (in_tx, in_rx) = mpsc::unbounded_channel::<Incoming>();
    let (open_tx, open_rx) = oneshot::channel::<Result<(), String>>();
    let open_tx = std::rc::Rc::new(std::cell::RefCell::new(Some(open_tx)));

    let open = {
        let open_tx = open_tx.clone();
        Closure::<dyn FnMut(Event)>::new(move |_e: Event| {
            if let Some(tx) = open_tx.borrow_mut().take() {
                let _ = tx.send(Ok(()));
            }
        })
    };
    let message = {
        let in_tx = in_tx.clone();
        Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
            if let Some(text) = e.data().as_string() {
                let _ = in_tx.send(Incoming::Text(text));
            }
        })
    };
    let close = {
        let in_tx = in_tx.clone();
        let open_tx = open_tx.clone();
        Closure::<dyn FnMut(CloseEvent)>::new(move |e: CloseEvent| {
            if let Some(tx) = open_tx.borrow_mut().take() {
                let _ = tx.send(Err(format!("closed before open ({})", e.code())));
            }
            let _ = in_tx.send(Incoming::Closed {
                code: Some(e.code()),
                reason: e.reason(),
            });
        })
    };
    let error = {
        let open_tx = open_tx.clone();
        Closure::<dyn FnMut(Event)>::new(move |_e: Event| {
            if let Some(tx) = open_tx.borrow_mut().take() {
                let _ = tx.send(Err("websocket error".into()));
            }
        })
    };
    ws.set_onopen(Some(open.as_ref().unchecked_ref()));
    ws.set_onmessage(Some(message.as_ref().unchecked_ref()));
    ws.set_onclose(Some(close.as_ref().unchecked_ref()));
    ws.set_onerror(Some(error.as_ref().unchecked_ref()));
    let handlers = Handlers {
        ws: ws.clone(),
        _open: open,
        _message: message,
        _close: close,
        _error: error,
    };
    match open_rx.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(Error::Transport(format!("websocket connect to {url}: {e}"))),
        Err(_) => return Err(Error::Transport("websocket connect aborted".into())),
    }
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<String>();
    wasm_bindgen_futures::spawn_local(async move {
        while let Some(text) = out_rx.recv().await {
            if handlers.ws.send_with_str(&text).is_err() {
                break;
            }
        }
        // The driver let go (or sending failed): detach the closures, close, drop them.
        drop(handlers);
    });
    Ok(Socket {
        tx: out_tx,
        rx: in_rx,
    })
}
