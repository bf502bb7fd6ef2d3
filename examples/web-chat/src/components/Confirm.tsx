// A modal confirmation on the native <dialog> (focus trap, Escape and the backdrop for free).
import { useEffect, useRef, type ReactNode } from 'react'

interface Props {
  title: string
  confirmLabel: string
  error?: string | null
  onConfirm(): void
  onCancel(): void
  children: ReactNode
}

export function Confirm({ title, confirmLabel, error, onConfirm, onCancel, children }: Props) {
  const ref = useRef<HTMLDialogElement>(null)
  useEffect(() => {
    const d = ref.current
    if (d && !d.open) d.showModal()
  }, [])
  return (
    <dialog ref={ref} className="dialog" aria-labelledby="confirm-title" onCancel={onCancel} data-testid="confirm">
      <h2 id="confirm-title">{title}</h2>
      <p>{children}</p>
      {error && <p className="error" role="alert">{error}</p>}
      <div className="dialog-actions">
        <button type="button" className="secondary" onClick={onCancel} autoFocus>Cancel</button>
        <button type="button" className="primary danger" onClick={onConfirm} data-testid="confirm-yes">
          {confirmLabel}
        </button>
      </div>
    </dialog>
  )
}
