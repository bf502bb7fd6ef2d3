import { useZajel } from '@zajel/client/react'
import { lastSeen, short, useNow } from '../time.ts'
import { Avatar } from './Avatar.tsx'
import type { Contact, View } from './ChatApp.tsx'
import { ThemeButton, type ThemeProps } from './ThemeButton.tsx'

interface Props extends ThemeProps {
  contacts: Contact[]
  incoming: number
  view: View
  onOpen(view: View): void
}

export function Sidebar({ theme, contacts, incoming, view, onOpen }: Props) {
  const { user, logout } = useZajel()
  const now = useNow()
  const me = user?.username ?? ''
  return (
    <nav className="sidebar" aria-label="Chats">
      <header className="bar">
        <Avatar name={me} size={32} />
        <strong className="grow ellipsis" data-testid="me">{me}</strong>
        <ThemeButton theme={theme} />
        <button type="button" className="icon" aria-label="Log out" title="Log out" data-testid="logout"
          onClick={() => void logout()}>
          ⎋
        </button>
      </header>
      <button type="button" className={`people-button ${view.kind === 'people' ? 'active' : ''}`}
        onClick={() => onOpen({ kind: 'people' })} data-testid="open-people"
        aria-label={`Friends and requests${incoming ? `, ${incoming} new` : ''}`}>
        <span className="people-icon" aria-hidden="true">+</span>
        <span className="grow">Friends &amp; requests</span>
        {incoming > 0 && <span className="badge" data-testid="requests-badge">{incoming}</span>}
      </button>
      <h2 className="section-title">Chats</h2>
      {contacts.length === 0 ? (
        <p className="muted list-empty">
          No friends yet. Open <em>Friends &amp; requests</em> to add someone by their username.
        </p>
      ) : (
        <ul className="contacts">
          {contacts.map(({ entry, summary }) => {
            const name = entry.user.username
            const active = view.kind === 'chat' && view.peer.id === entry.user.id
            const last = summary?.last_message
            const unread = summary?.unread ?? 0
            const status = entry.online ? 'online' : lastSeen(entry.last_seen, now)
            const preview = last ? `${last.sender === user?.id ? 'You: ' : ''}${last.body}` : status
            return (
              <li key={entry.user.id}>
                <button type="button" className={`contact ${active ? 'active' : ''}`}
                  aria-current={active ? 'true' : undefined}
                  aria-label={`${name}, ${status}${unread ? `, ${unread} unread` : ''}`}
                  onClick={() => onOpen({ kind: 'chat', peer: entry.user })}
                  data-testid="contact" data-username={name} data-online={String(entry.online)}>
                  <Avatar name={name} online={entry.online} />
                  <span className="contact-text">
                    <span className="row">
                      <span className="name ellipsis">{name}</span>
                      {last && <time className="when">{short(last.sent_at, now)}</time>}
                    </span>
                    <span className="row">
                      <span className="preview ellipsis" data-testid="preview">{preview}</span>
                      {unread > 0 && <span className="badge" data-testid="unread">{unread}</span>}
                    </span>
                  </span>
                </button>
              </li>
            )
          })}
        </ul>
      )}
    </nav>
  )
}
