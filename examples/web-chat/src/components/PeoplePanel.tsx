// Friends & requests: add someone by username, the requests to me (accept / decline), mine
// (cancel), and who I blocked (unblock).
import { useState, type FormEvent, type ReactNode } from 'react'
import type { useFriends } from '@zajel/client/react'
import type { FriendEntry, User } from '@zajel/client'
import { friendly } from '../errors.ts'
import { Avatar } from './Avatar.tsx'

interface Props {
  friends: ReturnType<typeof useFriends>
  onBack(): void
  onChat(peer: User): void
}

export function PeoplePanel({ friends, onBack, onChat }: Props) {
  const [name, setName] = useState('')
  const [notice, setNotice] = useState<{ ok: boolean; text: string } | null>(null)
  const [busy, setBusy] = useState(false)

  const act = async (p: Promise<unknown>, ok?: string) => {
    setBusy(true)
    try {
      await p
      setNotice(ok ? { ok: true, text: ok } : null)
      return true
    } catch (e) {
      setNotice({ ok: false, text: friendly(e) })
      return false
    } finally {
      setBusy(false)
    }
  }

  const add = async (e: FormEvent) => {
    e.preventDefault()
    const username = name.trim()
    if (!username) return
    if (await act(friends.requestFriend(username), `Request sent to ${username}.`)) setName('')
  }

  return (
    <section className="people" aria-labelledby="people-title">
      <header className="bar">
        <button type="button" className="icon back" onClick={onBack} aria-label="Back to chats" data-testid="back">
          ←
        </button>
        <h2 id="people-title" className="grow">Friends &amp; requests</h2>
      </header>
      <div className="people-body">
        <form className="add-friend" onSubmit={add}>
          <label htmlFor="add-friend-name">Add a friend by username</label>
          <div className="row">
            <input id="add-friend-name" value={name} onChange={(e) => setName(e.target.value)} autoCapitalize="none"
              spellCheck={false} placeholder="username" data-testid="add-friend-name" />
            <button type="submit" className="primary" disabled={busy || !name.trim()} data-testid="add-friend">
              Send request
            </button>
          </div>
          {notice && (
            <p className={notice.ok ? 'ok' : 'error'} role={notice.ok ? 'status' : 'alert'} data-testid="people-notice">
              {notice.text}
            </p>
          )}
        </form>

        <Group title="Requests for you" count={friends.incoming.length} empty="No requests right now.">
          {friends.incoming.map((f) => (
            <Person key={f.user.id} f={f} testid="incoming" note="wants to be your friend">
              <button type="button" className="primary small" data-testid="accept"
                onClick={() => void act(friends.accept(f.user.id), `You and ${f.user.username} are now friends.`)}>
                Accept
              </button>
              <button type="button" className="secondary small" data-testid="decline"
                onClick={() => void act(friends.decline(f.user.id))}>
                Decline
              </button>
            </Person>
          ))}
        </Group>

        <Group title="Sent requests" count={friends.outgoing.length} empty="You have no open requests.">
          {friends.outgoing.map((f) => (
            <Person key={f.user.id} f={f} testid="outgoing" note="waiting for an answer">
              <button type="button" className="secondary small" data-testid="cancel"
                onClick={() => void act(friends.cancel(f.user.id))}>
                Cancel
              </button>
            </Person>
          ))}
        </Group>

        <Group title="Friends" count={friends.friends.length} empty="No friends yet.">
          {friends.friends.map((f) => (
            <Person key={f.user.id} f={f} testid="friend" note={f.online ? 'online' : ''}>
              <button type="button" className="secondary small" onClick={() => onChat(f.user)}>
                Message
              </button>
            </Person>
          ))}
        </Group>

        {friends.blocked.length > 0 && (
          <Group title="Blocked" count={friends.blocked.length} empty="">
            {friends.blocked.map((f) => (
              <Person key={f.user.id} f={f} testid="blocked" note="blocked">
                <button type="button" className="secondary small" data-testid="unblock"
                  onClick={() => void act(friends.unblock(f.user.id))}>
                  Unblock
                </button>
              </Person>
            ))}
          </Group>
        )}
      </div>
    </section>
  )
}

function Group({ title, count, empty, children }: { title: string; count: number; empty: string; children: ReactNode }) {
  return (
    <section className="group">
      <h3 className="section-title">
        {title} {count > 0 && <span className="count">{count}</span>}
      </h3>
      {count === 0 ? <p className="muted list-empty">{empty}</p> : <ul className="people-list">{children}</ul>}
    </section>
  )
}

function Person({ f, testid, note, children }: { f: FriendEntry; testid: string; note: string; children: ReactNode }) {
  return (
    <li className="person" data-testid={testid} data-username={f.user.username} data-online={String(f.online)}>
      <Avatar name={f.user.username} online={f.relation === 'friends' ? f.online : undefined} size={36} />
      <span className="grow min0">
        <span className="name ellipsis">{f.user.username}</span>
        {note && <span className="muted small-text">{note}</span>}
      </span>
      <span className="person-actions">{children}</span>
    </li>
  )
}
