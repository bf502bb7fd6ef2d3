// The conversation: day separators, bubbles (mine right, theirs left) with time and state:
// sending (or waiting for the network), sent ✓, seen ✓✓, not sent (reason, retry/edit/delete);
// system messages (notices from the app's server) as centered grey lines.
import { Fragment, useEffect, useLayoutEffect, useRef } from 'react'
import { useMessages, useZajel } from '@zajel/client/react'
import { isSystemMessage, type User } from '@zajel/client'
import { friendly } from '../errors.ts'
import { clock, day, sameDay } from '../time.ts'

interface Props {
  me: string
  peer: User
  chat: ReturnType<typeof useMessages>
  onEdit(text: string): void
}

export function MessageList({ me, peer, chat, onEdit }: Props) {
  const { state } = useZajel()
  const { messages, outbox, peerReadSeq, hasMore, loadOlder } = chat
  const scroller = useRef<HTMLDivElement>(null)
  const stick = useRef(true)

  // Follow new messages while the user is at the bottom; leave them alone when scrolled up.
  const onScroll = () => {
    const el = scroller.current
    if (el) stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 80
  }
  useLayoutEffect(() => {
    const el = scroller.current
    if (el && stick.current) el.scrollTop = el.scrollHeight
  }, [messages.length, outbox.map((o) => o.state).join()])
  useEffect(() => {
    stick.current = true
  }, [peer.id])

  const offline = state.status !== 'online'
  let prev: number | null = null
  const separator = (t: number) => {
    const show = prev === null || !sameDay(prev, t)
    prev = t
    return show ? (
      <li className="day" data-testid="day-separator" role="separator">
        <span>{day(t)}</span>
      </li>
    ) : null
  }

  return (
    <div className="scroller" ref={scroller} onScroll={onScroll}>
      <ol className="messages" role="log" aria-label={`Messages with ${peer.username}`} data-testid="messages">
        {hasMore && (
          <li className="older">
            <button type="button" className="link" onClick={() => void loadOlder().catch(() => {})}>
              Load older messages
            </button>
          </li>
        )}
        {messages.length === 0 && outbox.length === 0 && (
          <li className="muted empty-chat" data-testid="empty-chat">
            No messages yet. Say hello to {peer.username}!
          </li>
        )}
        {messages.map((m) => {
          if (isSystemMessage(m)) {
            // A notice from the app's server (no person wrote it): a centered grey line.
            return (
              <Fragment key={m.seq}>
                {separator(m.sent_at)}
                <li className="notice" data-testid="system-message" data-seq={m.seq} role="note">
                  <span className="body">{m.body}</span>
                  <time dateTime={new Date(m.sent_at).toISOString()}>{clock(m.sent_at)}</time>
                </li>
              </Fragment>
            )
          }
          const mine = m.sender === me
          const seen = mine && m.seq <= peerReadSeq
          return (
            <Fragment key={m.seq}>
              {separator(m.sent_at)}
              <li className={`bubble ${mine ? 'mine' : 'theirs'}`} data-testid="message" data-seq={m.seq}>
                <span className="body">{m.body}</span>
                <span className="meta">
                  <time dateTime={new Date(m.sent_at).toISOString()}>{clock(m.sent_at)}</time>
                  {mine && (
                    <span className={`tick ${seen ? 'seen' : ''}`} data-testid="tick" data-seen={String(seen)}
                      aria-label={seen ? 'seen' : 'sent'} title={seen ? 'Seen' : 'Sent'}>
                      {seen ? '✓✓' : '✓'}
                    </span>
                  )}
                </span>
              </li>
            </Fragment>
          )
        })}
        {outbox.map((o) => (
          <Fragment key={o.key}>
            {separator(o.created_at)}
            <li className={`bubble mine ${o.state === 'failed' && !o.will_retry ? 'failed' : 'sending'}`}
              data-testid="pending" data-state={o.state}>
              <span className="body">{o.body}</span>
              {o.state !== 'failed' || o.will_retry ? (
                <span className="meta">
                  <span title={offline ? 'Waiting for the network' : o.will_retry ? 'Retrying' : 'Sending'}>
                    {offline ? 'waiting for network' : o.will_retry ? 'retrying' : 'sending'} ◷
                  </span>
                </span>
              ) : (
                <span className="failure" role="alert" data-testid="send-error" title={o.error?.code}>
                  <span>Not sent. {friendly(o.error)}</span>
                  <span className="actions">
                    {/* Sending the same text again cannot cure these: offer Edit instead. */}
                    {o.error?.code !== 'body_too_long' && o.error?.code !== 'empty_body' && (
                      <button type="button" className="link" data-testid="retry"
                        onClick={() => void chat.retry(o.key).catch(() => {})}>Retry</button>
                    )}
                    <button type="button" className="link" data-testid="edit"
                      onClick={() => {
                        void chat.discard(o.key).catch(() => {})
                        onEdit(o.body)
                      }}>Edit</button>
                    <button type="button" className="link" data-testid="delete"
                      onClick={() => void chat.discard(o.key).catch(() => {})}>Delete</button>
                  </span>
                </span>
              )}
            </li>
          </Fragment>
        ))}
      </ol>
    </div>
  )
}
