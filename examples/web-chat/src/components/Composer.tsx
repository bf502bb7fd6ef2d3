import { useRef, type FormEvent, type KeyboardEvent } from 'react'
import type { Message } from '@zajel/client'

interface Props {
  peer: string
  draft: string
  setDraft(text: string): void
  send(body: string): Promise<Message>
  onInput(): void
  stop(): void
}

/** Enter sends, Shift+Enter starts a new line. A refused message stays visible in the list
 * (marked "not sent" with the reason and retry / edit / delete), so sending never loses text. */
export function Composer({ peer, draft, setDraft, send, onInput, stop }: Props) {
  const input = useRef<HTMLTextAreaElement>(null)

  const submit = (e?: FormEvent) => {
    e?.preventDefault()
    const body = draft.trim()
    if (!body) return
    setDraft('')
    stop()
    // Failures show on the message itself (the outbox entry); nothing to do here.
    send(body).catch(() => {})
    input.current?.focus()
  }

  const onKeyDown = (e: KeyboardEvent<HTMLTextAreaElement>) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.nativeEvent.isComposing) {
      e.preventDefault()
      submit()
    }
  }

  return (
    <form className="composer" onSubmit={submit}>
      <textarea ref={input} rows={1} value={draft} placeholder={`Message ${peer}`} aria-label={`Message ${peer}`}
        data-testid="composer" onKeyDown={onKeyDown}
        onChange={(e) => {
          setDraft(e.target.value)
          if (e.target.value) onInput()
          else stop()
        }} />
      <button type="submit" className="send" aria-label="Send" data-testid="send" disabled={!draft.trim()}>
        <span aria-hidden="true">➤</span>
      </button>
    </form>
  )
}
