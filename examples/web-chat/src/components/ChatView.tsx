// One conversation: header (presence, last seen, typing, actions), messages, composer.
import { useEffect, useState } from 'react'
import { useFriends, useMessages, useTyping, useZajel } from '@zajel/client/react'
import type { FriendEntry, User } from '@zajel/client'
import { lastSeen, useNow } from '../time.ts'
import { Avatar } from './Avatar.tsx'
import { Composer } from './Composer.tsx'
import { FriendMenu } from './FriendMenu.tsx'
import { MessageList } from './MessageList.tsx'

interface Props {
  peer: User
  entry: FriendEntry | undefined
  friends: ReturnType<typeof useFriends>
  onBack(): void
}

export function ChatView({ peer, entry, friends, onBack }: Props) {
  const { client, user, state } = useZajel()
  const conversation = client?.conversationWith(peer.id) ?? null
  const chat = useMessages(conversation)
  const { typing, onInput, stop } = useTyping(conversation)
  const now = useNow()
  const isFriend = entry?.relation === 'friends'
  const [draft, setDraft] = useState('')

  // Everything shown is read: move my read mark (the peer's tick turns "seen").
  const last = chat.messages.at(-1)
  const { readSeq, markRead } = chat
  useEffect(() => {
    if (last && last.seq > readSeq) void markRead(last.seq).catch(() => {})
  }, [last, readSeq, markRead])

  // Escape goes back to the list (on a phone, the only way besides the back button).
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      if (e.key === 'Escape' && !document.querySelector('dialog[open], [role=menu]')) onBack()
    }
    window.addEventListener('keydown', onKey)
    return () => window.removeEventListener('keydown', onKey)
  }, [onBack])

  // Presence is only known while connected.
  const connected = state.status === 'online'
  const status = !connected
    ? 'waiting for network…'
    : typing.length > 0
    ? 'typing…'
    : !isFriend
      ? 'not in your friends'
      : entry?.online
        ? 'online'
        : lastSeen(entry?.last_seen, now)

  return (
    <section className="chat" aria-label={`Chat with ${peer.username}`}>
      <header className="bar chat-head">
        <button type="button" className="icon back" onClick={onBack} aria-label="Back to chats" data-testid="back">
          ←
        </button>
        <Avatar name={peer.username} online={isFriend && connected ? entry?.online : undefined} size={36} />
        <div className="grow min0">
          <h2 className="ellipsis" data-testid="peer-name">{peer.username}</h2>
          <p className={`status ${typing.length ? 'typing' : ''}`} data-testid="peer-status" aria-live="polite">
            {status}
          </p>
        </div>
        {isFriend && <FriendMenu peer={peer} friends={friends} onDone={onBack} />}
      </header>
      <MessageList me={user?.id ?? ''} peer={peer} chat={chat} onEdit={setDraft} />
      {isFriend ? (
        <Composer peer={peer.username} draft={draft} setDraft={setDraft} send={chat.send} onInput={onInput} stop={stop} />
      ) : (
        <p className="composer-note muted" data-testid="not-friends">
          You can’t send messages to {peer.username} because you are not friends.
        </p>
      )}
    </section>
  )
}
