import { useEffect, useMemo, useRef, useState, type FormEvent } from 'react'
import {
  useConversations,
  useFriends,
  useMessages,
  useTyping,
  useZajel,
  type ConnectionState,
  type FriendEntry,
  type User,
} from '@zajel/client'

export default function App() {
  const { session } = useZajel()
  return (
    <div className="app">
      <ConnectionBanner />
      {session ? <Chat /> : <AuthForm />}
    </div>
  )
}

function describe(state: ConnectionState): string {
  switch (state.status) {
    case 'connecting':
      return 'Connecting…'
    case 'online':
      return 'Online'
    case 'reconnecting':
      return `Reconnecting in ${Math.ceil(state.retry_in_ms / 1000)} s (attempt ${state.attempt})…`
    case 'signed_out':
      return 'Signed out'
    case 'closed':
      return 'Disconnected'
  }
}

function ConnectionBanner() {
  const { state, session } = useZajel()
  if (!session) return null
  return (
    <div className={`banner banner-${state.status}`} data-testid="connection" data-status={state.status}>
      {describe(state)}
    </div>
  )
}

function AuthForm() {
  const { register, login, error } = useZajel()
  const [username, setUsername] = useState('')
  const [password, setPassword] = useState('')
  const [busy, setBusy] = useState(false)
  const submit = (how: 'register' | 'login') => async (e: FormEvent) => {
    e.preventDefault()
    setBusy(true)
    try {
      await (how === 'register' ? register : login)(username, password)
    } catch {
      // shown from `error`
    } finally {
      setBusy(false)
    }
  }
  return (
    <form className="auth" onSubmit={submit('login')}>
      <h1>Zajel</h1>
      <input placeholder="username" autoComplete="username" value={username}
        onChange={(e) => setUsername(e.target.value)} data-testid="username" />
      <input placeholder="password" type="password" autoComplete="current-password" value={password}
        onChange={(e) => setPassword(e.target.value)} data-testid="password" />
      <div className="row">
        <button type="submit" disabled={busy} data-testid="login">Log in</button>
        <button type="button" disabled={busy} onClick={submit('register')} data-testid="register">
          Register
        </button>
      </div>
      {error && <p className="error" data-testid="auth-error">{error.message}</p>}
    </form>
  )
}

function Chat() {
  const { user, logout } = useZajel()
  const friends = useFriends()
  const { conversations } = useConversations()
  const [peer, setPeer] = useState<User | null>(null)
  const [actionError, setActionError] = useState<string | null>(null)
  const act = (p: Promise<unknown>) =>
    void p.then(
      () => setActionError(null),
      (e: unknown) => setActionError(e instanceof Error ? e.message : String(e)),
    )
  const names = useMemo(() => {
    const m = new Map<string, string>()
    for (const f of friends.entries) m.set(f.user.id, f.user.username)
    return m
  }, [friends.entries])

  return (
    <div className="chat">
      <aside>
        <header>
          <strong data-testid="me">{user?.username}</strong>
          <button className="link" onClick={() => void logout()}>log out</button>
        </header>
        <AddFriend request={friends.requestFriend} />
        {actionError && <p className="error" data-testid="action-error">{actionError}</p>}
        {friends.incoming.length > 0 && (
          <section>
            <h2>Requests</h2>
            <ul>
              {friends.incoming.map((f) => (
                <li key={f.user.id} data-testid="incoming" data-username={f.user.username}>
                  {f.user.username}
                  <button onClick={() => act(friends.accept(f.user.id))} data-testid="accept">Accept</button>
                  <button onClick={() => act(friends.decline(f.user.id))}>Decline</button>
                </li>
              ))}
            </ul>
          </section>
        )}
        {friends.outgoing.length > 0 && (
          <section>
            <h2>Sent requests</h2>
            <ul>
              {friends.outgoing.map((f) => (
                <li key={f.user.id} data-testid="outgoing" className="muted">
                  {f.user.username}
                  <button className="link" onClick={() => act(friends.cancel(f.user.id))}>cancel</button>
                </li>
              ))}
            </ul>
          </section>
        )}
        <section>
          <h2>Friends</h2>
          {friends.friends.length === 0 && <p className="muted">No friends yet.</p>}
          <ul>
            {friends.friends.map((f) => (
              <FriendRow key={f.user.id} f={f} active={peer?.id === f.user.id} onOpen={() => setPeer(f.user)} />
            ))}
          </ul>
        </section>
        <section>
          <h2>Conversations</h2>
          <ul>
            {conversations.map((c) => {
              const name = (c.peer && names.get(c.peer)) || c.peer || c.conversation
              return (
                <li key={c.conversation} data-testid="conversation" data-peer={name}
                  className={`clickable ${peer && c.peer === peer.id ? 'active' : ''}`}
                  onClick={() => {
                    const f = friends.entries.find((e) => e.user.id === c.peer)
                    if (f) setPeer(f.user)
                  }}>
                  <div className="conv-head">
                    <span>{name}</span>
                    {c.unread > 0 && <span className="badge" data-testid="unread">{c.unread}</span>}
                  </div>
                  <div className="muted preview">{c.last_message?.body}</div>
                </li>
              )
            })}
          </ul>
        </section>
      </aside>
      <main>
        {peer ? <ChatPane key={peer.id} peer={peer} /> : <p className="muted center">Pick a friend to chat.</p>}
      </main>
    </div>
  )
}

function AddFriend({ request }: { request: (username: string) => Promise<void> }) {
  const [name, setName] = useState('')
  const [error, setError] = useState<string | null>(null)
  const submit = async (e: FormEvent) => {
    e.preventDefault()
    if (!name.trim()) return
    try {
      await request(name.trim())
      setName('')
      setError(null)
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err))
    }
  }
  return (
    <form className="add-friend" onSubmit={submit}>
      <input placeholder="add friend by username" value={name} onChange={(e) => setName(e.target.value)}
        data-testid="add-friend-name" />
      <button type="submit" data-testid="add-friend">Add</button>
      {error && <p className="error">{error}</p>}
    </form>
  )
}

function FriendRow({ f, active, onOpen }: { f: FriendEntry; active: boolean; onOpen: () => void }) {
  return (
    <li className={`clickable ${active ? 'active' : ''}`} onClick={onOpen}
      data-testid="friend" data-username={f.user.username} data-online={String(f.online)}>
      <span className={`dot ${f.online ? 'on' : ''}`} title={f.online ? 'online' : 'offline'} />
      {f.user.username}
    </li>
  )
}

function ChatPane({ peer }: { peer: User }) {
  const { client, user } = useZajel()
  const conversation = client?.conversationWith(peer.id) ?? null
  const { messages, send, readSeq, peerReadSeq, markRead, hasMore, loadOlder } = useMessages(conversation)
  const { typing, onInput, stop } = useTyping(conversation)
  const [draft, setDraft] = useState('')
  const bottom = useRef<HTMLDivElement>(null)

  const last = messages.at(-1)
  useEffect(() => {
    bottom.current?.scrollIntoView({ block: 'end' })
    if (last && last.seq > readSeq) void markRead(last.seq).catch(() => {})
  }, [last, readSeq, markRead])

  const submit = async (e: FormEvent) => {
    e.preventDefault()
    const body = draft.trim()
    if (!body) return
    setDraft('')
    stop()
    await send(body).catch(() => {})
  }

  return (
    <div className="pane">
      <header>
        <strong>{peer.username}</strong>
      </header>
      <ol className="messages" data-testid="messages">
        {hasMore && (
          <li className="center">
            <button className="link" onClick={() => void loadOlder()}>older messages</button>
          </li>
        )}
        {messages.map((m) => {
          const mine = m.sender === user?.id
          const seen = mine && m.seq <= peerReadSeq
          return (
            <li key={m.seq} className={mine ? 'mine' : 'theirs'} data-testid="message" data-seq={m.seq}>
              <span className="body">{m.body}</span>
              <span className="meta">
                {new Date(m.sent_at).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })}
                {mine && (
                  <span className={`tick ${seen ? 'seen' : ''}`} data-testid="tick" data-seen={String(seen)}
                    title={seen ? 'seen' : 'sent'}>
                    {seen ? '✓✓' : '✓'}
                  </span>
                )}
              </span>
            </li>
          )
        })}
        <div ref={bottom} />
      </ol>
      <div className="typing" data-testid="typing">
        {typing.length > 0 ? `${peer.username} is typing…` : ''}
      </div>
      <form className="composer" onSubmit={submit}>
        <input value={draft} placeholder={`Message ${peer.username}`} data-testid="composer"
          onChange={(e) => {
            setDraft(e.target.value)
            if (e.target.value) onInput()
            else stop()
          }} />
        <button type="submit" data-testid="send">Send</button>
      </form>
    </div>
  )
}
