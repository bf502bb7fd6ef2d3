// "⋮" in the chat header: remove or block, each behind a confirmation dialog.
import { useEffect, useRef, useState } from 'react'
import type { useFriends } from '@zajel/client/react'
import type { User } from '@zajel/client'
import { friendly } from '../errors.ts'
import { Confirm } from './Confirm.tsx'

interface Props {
  peer: User
  friends: ReturnType<typeof useFriends>
  onDone(): void
}

type Action = 'remove' | 'block'

export function FriendMenu({ peer, friends, onDone }: Props) {
  const [open, setOpen] = useState(false)
  const [confirm, setConfirm] = useState<Action | null>(null)
  const [error, setError] = useState<string | null>(null)
  const menu = useRef<HTMLDivElement>(null)
  const button = useRef<HTMLButtonElement>(null)

  useEffect(() => {
    if (!open) return
    menu.current?.querySelector<HTMLButtonElement>('[role=menuitem]')?.focus()
    const close = (e: MouseEvent | KeyboardEvent) => {
      if (e instanceof KeyboardEvent) {
        if (e.key !== 'Escape') return
        button.current?.focus()
      } else if (menu.current?.contains(e.target as Node)) return
      setOpen(false)
    }
    window.addEventListener('mousedown', close)
    window.addEventListener('keydown', close)
    return () => {
      window.removeEventListener('mousedown', close)
      window.removeEventListener('keydown', close)
    }
  }, [open])

  const run = async (action: Action) => {
    try {
      await (action === 'remove' ? friends.remove(peer.id) : friends.block(peer.id))
      setConfirm(null)
      onDone()
    } catch (e) {
      setError(friendly(e))
    }
  }

  return (
    <div className="menu-wrap" ref={menu}>
      <button ref={button} type="button" className="icon" aria-haspopup="menu" aria-expanded={open}
        aria-label={`Actions for ${peer.username}`} data-testid="friend-menu" onClick={() => setOpen((o) => !o)}>
        ⋮
      </button>
      {open && (
        <div className="menu" role="menu">
          <button type="button" role="menuitem" data-testid="remove-friend"
            onClick={() => { setOpen(false); setError(null); setConfirm('remove') }}>
            Remove friend
          </button>
          <button type="button" role="menuitem" className="danger" data-testid="block"
            onClick={() => { setOpen(false); setError(null); setConfirm('block') }}>
            Block {peer.username}
          </button>
        </div>
      )}
      {confirm && (
        <Confirm
          title={confirm === 'remove' ? `Remove ${peer.username}?` : `Block ${peer.username}?`}
          confirmLabel={confirm === 'remove' ? 'Remove' : 'Block'}
          error={error}
          onCancel={() => setConfirm(null)}
          onConfirm={() => void run(confirm)}
        >
          {confirm === 'remove'
            ? 'You will no longer be friends and can’t message each other. Your chat history stays.'
            : 'They can’t send you messages or friend requests. You can unblock them later under Friends & requests.'}
        </Confirm>
      )}
    </div>
  )
}
