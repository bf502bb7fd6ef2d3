// The signed-in app: the contact list and one detail pane (a chat, or friends & requests).
// Desktop shows both side by side; a phone shows one at a time with a back button.
import { useEffect, useMemo, useState } from 'react'
import { useConversations, useFriends } from '@zajel/client/react'
import type { ConversationSummary, FriendEntry, User } from '@zajel/client'
import type { ThemeProps } from './ThemeButton.tsx'
import { Sidebar } from './Sidebar.tsx'
import { ChatView } from './ChatView.tsx'
import { PeoplePanel } from './PeoplePanel.tsx'

export type View = { kind: 'none' } | { kind: 'chat'; peer: User } | { kind: 'people' }

/** A friend with their conversation (if any): one row per person. */
export interface Contact {
  entry: FriendEntry
  summary: ConversationSummary | null
}

export function ChatApp({ theme }: ThemeProps) {
  const friends = useFriends()
  const { conversations, totalUnread } = useConversations()
  const [view, setView] = useState<View>({ kind: 'none' })

  useEffect(() => {
    document.title = totalUnread > 0 ? `(${totalUnread}) Zajel` : 'Zajel'
  }, [totalUnread])

  const contacts = useMemo<Contact[]>(() => {
    const byPeer = new Map(conversations.map((c) => [c.peer, c]))
    return friends.friends
      .map((entry) => ({ entry, summary: byPeer.get(entry.user.id) ?? null }))
      .sort((a, b) => {
        const ta = a.summary?.last_message?.sent_at ?? 0
        const tb = b.summary?.last_message?.sent_at ?? 0
        return tb - ta || a.entry.user.username.localeCompare(b.entry.user.username)
      })
  }, [friends.friends, conversations])

  const back = () => setView({ kind: 'none' })
  const peerEntry = view.kind === 'chat' ? friends.entries.find((e) => e.user.id === view.peer.id) : undefined

  return (
    <div className="layout" data-view={view.kind === 'none' ? 'list' : 'detail'}>
      <Sidebar
        theme={theme}
        contacts={contacts}
        incoming={friends.incoming.length}
        view={view}
        onOpen={setView}
      />
      <div className="detail">
        {view.kind === 'chat' ? (
          <ChatView key={view.peer.id} peer={view.peer} entry={peerEntry} friends={friends} onBack={back} />
        ) : view.kind === 'people' ? (
          <PeoplePanel friends={friends} onBack={back} onChat={(peer) => setView({ kind: 'chat', peer })} />
        ) : (
          <div className="empty-detail">
            <p className="muted">
              {contacts.length === 0 ? 'Add a friend to start chatting.' : 'Select a chat to start messaging.'}
            </p>
          </div>
        )}
      </div>
    </div>
  )
}
