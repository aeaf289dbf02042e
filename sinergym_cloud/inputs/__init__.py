"""What users write, mapped onto the contracts: batch files (``batchfile``), the original
``DRL_battery.py`` command lines (``legacy``, from the flag table ``flags`` read off the contract's
fields), Sinergym's training YAML (``sinergym_config``) and W&B sweep files (``wandb_sweep``). The
publisher and the trainer's command line import it; it imports only the shared modules.
"""
